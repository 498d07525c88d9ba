"""Uploads read as a browser shows them: a seeded corpus of real and mutated files in every
accepted format, and hostile ones (bombs, EPS, truncated, rotated, random bytes)."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
from PIL import Image

from zfwidgets.base.uploads import ALLOWED_FORMATS, decode_upload, sniff


def _gradient(w=24, h=16) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 10 % 256, y * 15 % 256, (x + y) * 5 % 256], -1).astype(np.uint8)


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


RGB = _gradient()


def _arr(im: Image.Image) -> np.ndarray:
    return np.asarray(im, dtype=np.int16)


@pytest.mark.parametrize(
    ("fmt", "kw", "tol"),
    [
        ("PNG", {}, 0),
        ("BMP", {}, 0),
        ("TIFF", {}, 0),
        ("WEBP", {"lossless": True}, 0),
        ("JPEG", {"quality": 95}, 24),
        ("GIF", {}, 60),
        ("PPM", {}, 0),
    ],
)
def test_every_accepted_format_decodes_to_its_pixels(fmt, kw, tol):
    data = _save(Image.fromarray(RGB), fmt, **kw)
    assert sniff(data) == fmt
    out = decode_upload(data)
    assert out.mode == "RGB" and out.size == (24, 16)
    assert np.abs(_arr(out) - RGB).max() <= tol
    grey = decode_upload(data, channels=1)
    assert grey.mode == "L" and grey.size == (24, 16)


def test_alpha_is_composited_on_white():
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 200  # red-ish, fully transparent on the left half, half on the right
    rgba[:, 4:, 3] = 128
    out = _arr(decode_upload(_save(Image.fromarray(rgba, "RGBA"), "PNG")))
    assert (out[:, :4] == 255).all()  # transparent: the page's white, not black
    expect = np.round(200 * 128 / 255 + 255 * (1 - 128 / 255))
    assert abs(out[0, 6, 0] - expect) <= 1 and abs(out[0, 6, 1] - 127) <= 1


def test_palette_with_transparency_and_la():
    p = Image.fromarray(RGB).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    p.info["transparency"] = 0
    out = decode_upload(_save(p, "PNG", transparency=0))
    idx = np.asarray(p)
    assert (_arr(out)[idx == 0] == 255).all()
    la = Image.fromarray(
        np.stack([np.full((4, 4), 10, np.uint8), np.zeros((4, 4), np.uint8)], -1), "LA"
    )
    assert (_arr(decode_upload(_save(la, "PNG"))) == 255).all()


def test_16_bit_png_is_scaled_not_clipped_to_white():
    a = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    im = Image.fromarray(a)  # mode I;16
    out = _arr(decode_upload(_save(im, "PNG"), channels=1))
    np.testing.assert_allclose(out, np.round(a / 65535 * 255), atol=1)
    assert out.min() == 0 and out.max() < 255


def test_float_tiff_maps_zero_one_to_the_full_range():
    a = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    out = _arr(decode_upload(_save(Image.fromarray(a, "F"), "TIFF"), channels=1))
    np.testing.assert_allclose(out, np.round(a * 255), atol=1)


def test_cmyk_jpeg_becomes_rgb():
    im = Image.fromarray(RGB).convert("CMYK")
    out = decode_upload(_save(im, "JPEG", quality=95))
    assert out.mode == "RGB" and np.abs(_arr(out) - RGB).mean() < 12


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = _save(Image.fromarray(RGB), "JPEG", quality=95, exif=exif)
    out = decode_upload(data)
    assert out.size == (16, 24)
    expect = np.rot90(RGB, k=-1)
    assert np.abs(_arr(out) - expect).mean() < 8


def test_gif_animation_gives_its_first_frame():
    frames = [Image.new("RGB", (6, 6), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    out = _arr(decode_upload(buf.getvalue()))
    assert out[0, 0, 0] > 200 and out[0, 0, 2] < 50


def test_large_jpeg_is_decoded_in_draft_mode_within_the_budget():
    big = Image.fromarray(np.tile(RGB, (50, 50, 1)))  # 1200 x 800
    out = decode_upload(_save(big, "JPEG"), max_pixels=100_000)
    assert out.size[0] * out.size[1] <= 100_000 and out.size[0] >= 150


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "EPS"),
        (b"\xc5\xd0\xd3\xc6" + b"\0" * 40, "EPS"),
        (b"%PDF-1.4\n", "PDF"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "SVG"),
        (b"not an image", "not an image"),
        (b"", "empty"),
        (b"\0" * (21 * 2**20), "limit"),
    ],
)
def test_hostile_files_get_a_message(data, match):
    with pytest.raises(ValueError, match=match):
        decode_upload(data)


def test_a_pixel_bomb_is_refused_before_decoding():
    # a 9000 x 9000 PNG compresses to ~250 kB; only the header is read
    data = _save(Image.new("L", (9000, 9000)), "PNG")
    assert len(data) < 300_000
    with pytest.raises(ValueError, match="megapixels"):
        decode_upload(data, max_pixels=10_000_000)


def test_truncated_and_mutated_files_decode_or_give_a_message():
    rng = random.Random(0)
    seeds = [
        _save(Image.fromarray(RGB), "PNG"),
        _save(Image.fromarray(RGB), "JPEG"),
        _save(Image.fromarray(RGB), "GIF"),
        _save(Image.fromarray(RGB), "BMP"),
        _save(Image.fromarray(RGB), "TIFF"),
        _save(Image.fromarray(RGB), "WEBP"),
    ]
    outcomes = {"decoded": 0, "message": 0}
    for k in range(300):
        data = bytearray(rng.choice(seeds))
        if k % 3 == 0:
            data = data[: rng.randrange(8, len(data))]
        else:
            for _ in range(rng.randrange(1, 6)):
                data[rng.randrange(8, len(data))] = rng.randrange(256)
        try:
            out = decode_upload(bytes(data))
        except ValueError as exc:
            assert str(exc)
            outcomes["message"] += 1
        else:
            assert out.mode == "RGB" and out.size[0] >= 1
            outcomes["decoded"] += 1
    assert outcomes["message"] > 0 and outcomes["decoded"] > 0


def test_the_format_comes_from_the_bytes():
    assert ALLOWED_FORMATS == ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF", "PPM")
    # an ICO or PCX file is something Pillow reads, but not on the list
    ico = _save(Image.fromarray(RGB), "ICO")
    with pytest.raises(ValueError, match="accepted formats"):
        decode_upload(ico)


def test_a_multi_picture_jpeg_is_read_as_its_first_picture():
    # what many cameras write; Pillow names it "MPO"
    second = Image.fromarray(255 - RGB)
    data = _save(Image.fromarray(RGB), "MPO", save_all=True, append_images=[second], quality=95)
    assert sniff(data) == "JPEG"
    assert np.abs(_arr(decode_upload(data)) - RGB).max() <= 24
