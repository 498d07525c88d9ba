"""Image files decoded as a browser shows them: the one decoder for untrusted image bytes.

Uploads (:mod:`zfwidgets.base.uploads`, the Explorer) and image folders
(:class:`zfwidgets.atlas.folder.ImageFolder`, the command line) both read files through
:func:`open_image`, which returns an 8-bit RGB or greyscale PIL image or raises a
``ValueError`` that says what is wrong:

- the format comes from the bytes (never from the file name) and must be one of
  :data:`ALLOWED_FORMATS`; Pillow is told to try that format only, so no other plugin (EPS,
  which runs Ghostscript where it is installed, among them) ever sees the data;
- the file size is checked before it is read, the pixel count from the header before
  anything is decoded; a large JPEG is decoded at a reduced scale (``draft``) to fit the
  budget instead of being refused;
- the EXIF orientation is applied (phone photos are stored sideways);
- 16-bit images are scaled (not clipped to white), float images map [0, 1] to [0, 255],
  palette, CMYK and other modes are converted to RGB, and transparency is composited on
  white, as a page shows it.

Any failure of the decoder, whatever its exception type, becomes a ``ValueError``.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np

__all__ = ["ALLOWED_FORMATS", "open_image", "sniff"]

#: The one list of image formats read from untrusted files (Pillow's names). A multi-picture
#: JPEG (Pillow's "MPO", what many cameras write) is read as the JPEG it starts with.
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF", "PPM")
_SAME = {"MPO": "JPEG"}


def sniff(data: bytes) -> str | None:
    """The image format named by the first bytes of ``data`` (one of ``ALLOWED_FORMATS``),
    or ``None`` for anything else."""
    head = bytes(data[:16])
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head.startswith(b"BM"):
        return "BMP"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "TIFF"
    if head[:1] == b"P" and head[1:2] in (b"1", b"2", b"3", b"4", b"5", b"6"):
        return "PPM"  # the netpbm family (PBM, PGM, PPM), one Pillow plugin
    return None


def _describe(data: bytes) -> str:
    head = bytes(data[:16])
    known = {
        b"%!PS": "a PostScript/EPS file",
        b"\xc5\xd0\xd3\xc6": "an EPS file",
        b"%PDF": "a PDF file",
        b"<svg": "an SVG file",
        b"<?xml": "an XML/SVG file",
        b"PK\x03\x04": "a ZIP archive",
    }
    for magic, what in known.items():
        if head.startswith(magic):
            return what
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif"):
        return "a HEIC/AVIF file"
    return "not an image in a format this reader accepts"


def _to_display(im):
    """``im`` as a browser shows it, in mode RGB or L (8-bit); alpha composited on white."""
    from PIL import Image

    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        a = np.asarray(im, dtype=np.float64)
        scale = 65535.0 if mode != "I" or a.max(initial=0) > 255 else 255.0
        a = np.clip(a / scale * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(a, "L")
    if mode == "F":
        a = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0, posinf=1.0, neginf=0.0)
        a = np.clip(a * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(a, "L")
    if mode == "1":
        return im.convert("L")
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    elif mode in ("L", "RGB") and "transparency" in im.info:
        im = im.convert("LA" if mode == "L" else "RGBA")
        mode = im.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        out = Image.alpha_composite(white, rgba).convert("RGB")
        return out.convert("L") if mode in ("LA", "La") else out
    if mode in ("L", "RGB"):
        return im
    return im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX, ...


def open_image(
    source: bytes | bytearray | memoryview | str | os.PathLike,
    *,
    channels: int = 3,
    max_bytes: int,
    max_pixels: int,
    min_size: tuple[int, int] | None = None,
):
    """Decode an image file as a browser shows it; see the module docstring.

    Parameters
    ----------
    source : bytes or path
        The file's content, or its path (read only after its size is checked).
    channels : 1 or 3
        Mode of the result: ``"L"`` for 1, ``"RGB"`` otherwise.
    max_bytes, max_pixels : int
        Limits on the file size and on the decoded pixel count.
    min_size : (width, height), optional
        The size the caller will shrink the image to: a JPEG is decoded at the smallest
        power-of-two scale still at least this large (faster, same result after resizing).

    Returns
    -------
    PIL.Image.Image
        8-bit, mode ``"RGB"`` or ``"L"``, upright.

    Raises
    ------
    ValueError
        With a message for the user, for every file that cannot be shown.
    """
    from PIL import Image, ImageOps

    if isinstance(source, (str, os.PathLike)):
        size = os.stat(source).st_size
        if size > max_bytes:
            raise ValueError(
                f"the file is {size / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.0f} MB"
            )
        with open(source, "rb") as f:
            head = f.read(16)
        fp = source
    else:
        data = bytes(source)
        size, head, fp = len(data), data[:16], io.BytesIO(data)
        if size > max_bytes:
            raise ValueError(
                f"the file is {size / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.0f} MB"
            )
    if size == 0:
        raise ValueError("the file is empty")
    fmt = sniff(head)
    if fmt is None:
        raise ValueError(f"{_describe(head)}; accepted formats: {', '.join(ALLOWED_FORMATS)}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(fp, formats=[fmt]) as im:
                if _SAME.get(im.format, im.format) != fmt:
                    raise ValueError(f"{im.format} files are not accepted")
                w, h = im.size
                if w < 1 or h < 1:
                    raise ValueError(f"the image has no pixels ({w}x{h})")
                if fmt == "JPEG":
                    request = min_size
                    if w * h > max_pixels:
                        # decode at 1/2, 1/4 or 1/8 scale; ask for half the budget's side so
                        # the power-of-two step chosen (never below the request) stays within it
                        scale = (max_pixels / (w * h)) ** 0.5 / 2
                        fit = (max(1, int(w * scale)), max(1, int(h * scale)))
                        request = fit if request is None else tuple(map(min, request, fit))
                    if request is not None:
                        im.draft(im.mode if im.mode in ("L", "RGB") else "RGB", request)
                        w, h = im.size
                if w * h > max_pixels:
                    raise ValueError(
                        f"the image is {w}x{h} = {w * h / 1e6:.3g} megapixels; the limit is "
                        f"{max_pixels / 1e6:.3g} megapixels"
                    )
                if getattr(im, "n_frames", 1) > 1:
                    im.seek(0)  # an animation: its first frame
                im.load()
                im = ImageOps.exif_transpose(im)
                out = _to_display(im)
                out.load()
    except Image.DecompressionBombError as exc:
        raise ValueError(f"the image is too large to decode safely ({exc})") from exc
    except ValueError as exc:
        if str(exc).startswith(("the image", "the file")) or "not accepted" in str(exc):
            raise
        raise ValueError(
            f"the {fmt} file could not be decoded ({type(exc).__name__}: {exc})"
        ) from exc
    except Exception as exc:  # the decoders raise many types on broken files
        msg = str(exc).split("\n")[0][:200]
        raise ValueError(
            f"the {fmt} file could not be decoded ({type(exc).__name__}: {msg})"
        ) from exc
    return out.convert("L") if channels == 1 else out.convert("RGB")
