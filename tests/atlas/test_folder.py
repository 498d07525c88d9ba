"""ImageFolder reads its files with the uploads' decoder (one format list, one set of rules)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from zfwidgets.atlas.folder import ImageFolder
from zfwidgets.atlas.mining import UnreadableImage
from zfwidgets.base.uploads import decode_upload


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _files() -> dict[str, bytes]:
    y, x = np.mgrid[0:16, 0:24]
    rgb = np.stack([x * 10 % 256, y * 15 % 256, (x + y) * 5 % 256], -1).astype(np.uint8)
    rgba = np.concatenate([rgb, np.full((16, 24, 1), 100, np.uint8)], -1)
    rotated = Image.fromarray(rgb)
    exif = rotated.getexif()
    exif[0x0112] = 6  # stored sideways: shown turned 90 degrees
    deep = Image.fromarray((x * 2000 + y * 100).astype(np.uint16))
    return {
        "a_alpha.png": _save(Image.fromarray(rgba, "RGBA"), "PNG"),
        "b_rotated.jpg": _save(rotated, "JPEG", exif=exif, quality=95),
        "c_deep.png": _save(deep, "PNG"),
        "d_grey.ppm": _save(Image.fromarray(rgb[..., 0]), "PPM"),
    }


def test_folder_images_decode_as_uploads_do(tmp_path):
    files = _files()
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    folder = ImageFolder(tmp_path, size=16)
    assert folder.files == sorted(files)
    for i, name in enumerate(folder.files):
        got = folder.load(i)
        want = decode_upload(files[name])
        assert got.mode == "RGB" and got.size == want.size
        assert np.array_equal(np.asarray(got), np.asarray(want)), name
    assert folder.load(1).size == (16, 24)  # the EXIF orientation applied
    assert 150 < np.asarray(folder.load(2)).max() < 255  # 16 bits scaled, not clipped to white


def test_a_file_in_another_format_is_unreadable(tmp_path):
    (tmp_path / "a.png").write_bytes(_save(Image.new("RGB", (9, 9)), "PNG"))
    (tmp_path / "b.jpg").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n" + b"0" * 64)
    folder = ImageFolder(tmp_path, size=8)
    folder.load(0)
    with pytest.raises(UnreadableImage, match="b.jpg.*EPS"):
        folder.load(1)
