"""One image file -> a (3, size, size) uint8 array: the decoding shared by every image folder.

Each file is turned as its EXIF orientation says, centre-cropped to a square and resized; pixels
deeper than 8 bits are scaled, never clipped (:func:`_to_rgb`); an image of more than
:data:`MAX_DECODED_PIXELS` pixels is refused before it is decoded, and at most
:data:`DECODE_THREADS` images are decoded at once. Used by :mod:`.decode_cache` and :mod:`.folders`.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from .sources import CorruptDatasetError

# At most DECODE_THREADS images are decoded at once, whatever the pool that asks (each may take up to
# ~7 bytes a pixel while it is converted), and none of more than MAX_DECODED_PIXELS pixels: a
# 1-bit PNG of 13,000 x 13,000 is a 20 KB file that decodes to 0.5 GB of RGB, under Pillow's limit.
DECODE_THREADS = min(4, os.cpu_count() or 1)
MAX_DECODED_PIXELS = 2 ** 24  # 16.8 million, e.g. 4096 x 4096; JPEGs count at the reduced size they are decoded at
_DECODING = threading.BoundedSemaphore(DECODE_THREADS)


def decode_one(path: Path, size: int) -> np.ndarray:
    """One image file -> (3, size, size) uint8: RGB, turned as its EXIF orientation says (phone
    photos), centre-cropped to a square, resized.

    A JPEG is decoded at the smallest 1/2, 1/4 or 1/8 scale that still covers twice ``size``
    (Pillow's draft mode, as its ``thumbnail`` uses it); an image of more than
    :data:`MAX_DECODED_PIXELS` pixels is refused before it is decoded. Pixels deeper than 8 bits
    are scaled to 0..255, never clipped (see :func:`_to_rgb`).
    """
    from PIL import Image, ImageOps

    with _DECODING:
        try:
            with Image.open(path) as img:
                img.draft("RGB", (2 * size, 2 * size))  # JPEG only: decode at a reduced scale
                _check_pixels(path, img.size)
                ImageOps.exif_transpose(img, in_place=True)  # decodes the file
                img = _to_rgb(path, img)
        except CorruptDatasetError:
            raise
        except Image.DecompressionBombError:  # refused by Image.open: over twice Pillow's own limit
            raise _too_large(path, f"over {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} million pixels") from None
        except Exception as err:  # noqa: BLE001 - PIL raises many kinds for a damaged file
            raise CorruptDatasetError(f"{path} is not a readable image ({type(err).__name__}: {str(err)[:120]}); "
                                      "delete or replace it") from None
        w, h = img.size
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        img = img.crop((left, top, left + s, top + s)).resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


def _check_pixels(path: Path, size: tuple[int, int]) -> None:
    w, h = size
    if w * h > MAX_DECODED_PIXELS:
        raise _too_large(path, f"{w}x{h} pixels ({w * h / 1e6:.0f} million)")


def _too_large(path: Path, what: str) -> CorruptDatasetError:
    return CorruptDatasetError(
        f"{path} is {what}, more than the {MAX_DECODED_PIXELS / 1e6:.1f} million an image may decode to here "
        f"(MAX_DECODED_PIXELS in {__name__}): shrink it (e.g. to 1024 pixels a side; a JPEG may be 8 times "
        "larger a side, as it is decoded at a reduced scale) or move it out of the folder")


def _to_rgb(path: Path, img) -> "Image.Image":
    """``img`` as 8-bit RGB. Deeper pixels are scaled to 0..255 where their range is known: 16-bit
    (Pillow modes ``I;16*``) by 255/65535; 32-bit integers (mode ``I``) likewise when they lie in
    0..65535 (older Pillow opens 16-bit PNGs so), else refused; floats (mode ``F``) by 255 when they
    lie in [0, 1], else refused: no range is implied, and stretching each image to its own minimum
    and maximum would change its brightness silently."""
    from PIL import Image

    if not (img.mode.startswith("I;16") or img.mode in ("I", "F")):
        return img.convert("RGB")
    values = np.asarray(img)
    lo, hi = values.min(), values.max()
    if img.mode == "F" and not (0 <= lo and hi <= 1):  # NaN fails both
        raise CorruptDatasetError(f"{path} holds floating-point pixels (Pillow mode F) from {lo:.3g} to {hi:.3g}; "
                                  "floats are read only in [0, 1]: rescale it to [0, 1], or save it as an 8-bit image")
    if img.mode == "I" and not (0 <= lo and hi <= 65535):
        raise CorruptDatasetError(f"{path} holds 32-bit integer pixels (Pillow mode I) from {lo} to {hi}, a range "
                                  "with no set meaning; save it as an 8-bit image, or as a 16-bit PNG (0 to 65535)")
    scale = np.float32(255 if img.mode == "F" else 255 / 65535)
    return Image.fromarray(np.rint(values.astype(np.float32) * scale).astype(np.uint8)).convert("RGB")
