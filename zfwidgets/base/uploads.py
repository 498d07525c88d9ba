"""Uploaded image files read as a browser shows them.

The bytes a user uploads are untrusted input. :func:`decode_upload` turns them into an 8-bit
RGB or greyscale PIL image the way a browser would display the file, or raises a
``ValueError`` that says what is wrong. It is :func:`zfwidgets.base.decode.open_image` (the
one decoder, shared with image folders: format allowlist, header checks before anything is
allocated, EXIF orientation, transparency on white) with the upload limits below.
"""

from __future__ import annotations

from .decode import ALLOWED_FORMATS, open_image, sniff

__all__ = ["ALLOWED_FORMATS", "MAX_UPLOAD_BYTES", "MAX_UPLOAD_PIXELS", "decode_upload", "sniff"]

#: Largest upload accepted (bytes).
MAX_UPLOAD_BYTES = 20 * 2**20
#: Largest decoded image (pixels, after JPEG draft scaling): about a 7000 x 7000 photo.
MAX_UPLOAD_PIXELS = 50_000_000


def decode_upload(
    data: bytes | bytearray | memoryview,
    *,
    channels: int = 3,
    max_bytes: int = MAX_UPLOAD_BYTES,
    max_pixels: int = MAX_UPLOAD_PIXELS,
):
    """Decode an uploaded file (``data``, its bytes) as a browser shows it: an 8-bit ``"RGB"``
    (or, for ``channels=1``, ``"L"``) PIL image, upright, or a ``ValueError`` with a message
    for the user; :func:`zfwidgets.base.decode.open_image` with the upload limits."""
    return open_image(bytes(data), channels=channels, max_bytes=max_bytes, max_pixels=max_pixels)
