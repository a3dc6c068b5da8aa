"""Decode only the part of a JPEG a training crop needs (libjpeg-turbo's partial decoding).

A thin wrapper over the optional C extension ``kdlab.data._jpeg_region`` (built by ``setup.py``
where libjpeg-turbo's headers are found): :func:`decode_region` decodes the box ``(top, left, h,
w)`` of the image scaled by 1/``scale`` in the DCT domain (``scale`` 1, 2, 4 or 8), skipping the
inverse DCT, upsampling and colour conversion outside the box and the entropy decoding below it.
Its pixels equal the same box cut from a whole decode at that scale (torchvision's
``decode_jpeg`` at 1, PIL's draft mode otherwise), so it is a speed-up, not an approximation.

Without the extension, or for a file libjpeg will not take this way (CMYK, damaged data),
:func:`decode_region` returns None and the caller decodes the whole image as before.
"""

from __future__ import annotations

from torch import Tensor, frombuffer, uint8

try:
    from kdlab.data import _jpeg_region
except ImportError:  # not built: no compiler or no libjpeg-turbo headers at install time
    _jpeg_region = None


def available() -> bool:
    """Whether the extension was built and loads."""
    return _jpeg_region is not None


def scaled_size(height: int, width: int, scale: int) -> tuple[int, int]:
    """(H, W) of the image decoded at 1/``scale``: libjpeg rounds up."""
    return -(-height // scale), -(-width // scale)


def decode_region(data: bytes, scale: int, top: int, left: int, h: int, w: int) -> Tensor | None:
    """Box (top, left, h, w) of the JPEG ``data`` decoded at 1/``scale``: uint8 3 x h x w (channels-last memory).

    The box is in the coordinates of the scaled image (:func:`scaled_size`). None when the
    extension is absent or libjpeg declines the file; a box outside the image raises ValueError.
    """
    if _jpeg_region is None:
        return None
    try:
        buf = _jpeg_region.decode(data, 8 // scale, left, top, w, h)
    except _jpeg_region.Unsupported:
        return None
    return frombuffer(buf, dtype=uint8).view(h, w, 3).permute(2, 0, 1)
