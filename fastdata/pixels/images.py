"""Turning whatever a dataset holds into RGB pixels, the way torchvision's ImageFolder sees them.

Real folders hold CMYK and grayscale JPEGs, PNGs named ``.JPEG``, RGBA and 16-bit PNGs, progressive
and EXIF-rotated JPEGs.  All of them become H x W x 3 uint8 RGB here:

- the format is sniffed from the bytes, never from the file name;
- alpha is dropped (as ``PIL.Image.convert('RGB')``, which torchvision's loader uses);
- 16-bit samples keep their 8 most significant bits (Pillow's ``convert`` would clip them);
- EXIF orientation is **not** applied by default: torchvision's loader does not apply it, and the
  crop boxes and label maps published for ImageNet (ReLabel, ImageNet+) are in the coordinates of
  the unrotated pixels.  ``exif_transpose=True`` applies it.

A plain baseline RGB JPEG is also offered untouched (less its EXIF/XMP/ICC/comment segments), so a
writer can store it without a second generation of JPEG loss.
"""
from __future__ import annotations

import io
import struct
import warnings
from typing import Any, Optional

import numpy as np
from PIL import Image, ImageOps

from . import jpeg

# Pillow's own decompression-bomb limit, made an error instead of a warning: a 16-bit 30000 x 30000
# PNG in a training folder is a mistake, and decoding it would take gigabytes.
MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS else 1 << 28


class ImageDecodeError(ValueError):
    """The bytes are not an image we can convert to RGB; the message says why."""


def _check_jpeg_error(err: jpeg.JpegError) -> None:
    """Raise ImageDecodeError unless the libjpeg warning is the harmless junk-before-EOI one:
    Pillow would decode corrupt entropy data as noise without a word."""
    if not jpeg.is_harmless(err):
        what = "truncated" if "Premature end of JPEG file" in str(err) else "corrupt"
        raise ImageDecodeError(f"{what} JPEG: {err}") from None


class SourceImage:
    """A decodable image: its size (after EXIF transposition if asked for) and its pixels.

    A baseline three-component JPEG that needs no rotation can also be stored as it is
    (``stored_jpeg``).  Its entropy-coded data is checked exactly once, by whichever comes first:
    the full decode (``rgb``) or, when the pixels are never needed, a cheap decode at the smallest
    DCT scale; either raises ImageDecodeError for a truncated or corrupt stream."""

    def __init__(self, width: int, height: int, data: Optional[bytes] = None,
                 info: Optional["jpeg.JpegInfo"] = None, rgb: Optional[np.ndarray] = None,
                 exif_transpose: bool = False):
        self.width, self.height = width, height
        self._data, self._info, self._rgb = data, info, rgb
        self._exif_transpose = exif_transpose
        self._checked = False

    def stored_jpeg(self) -> Optional[bytes]:
        """The original stream less its metadata segments, if it can be stored as is."""
        if self._info is None:
            return None
        if not self._checked:
            try:
                jpeg.validate(self._data, self._info.components)
            except jpeg.JpegError as err:
                _check_jpeg_error(err)
                self._info = None        # intact pixels, junk stream: store it re-encoded
                return None
            self._checked = True
        return jpeg.strip_metadata(self._data, self._info)

    def rgb(self) -> np.ndarray:
        """The pixels, H x W x 3 uint8 (decoded on first use)."""
        if self._rgb is None:
            if self._info is not None or self._checked:
                try:
                    self._rgb = jpeg.decode(self._data, strict=not self._checked)
                except jpeg.JpegError as err:
                    _check_jpeg_error(err)
                    self._rgb = jpeg.decode(self._data, strict=False)
                self._checked = True
            else:
                self._rgb = _decode_any(self._data, self._exif_transpose)
        return self._rgb


def _pil_to_rgb(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im)
    if mode.startswith("I;16") or mode == "I":
        # 16-bit grayscale (PNG) arrives as I;16 or I with values up to 65535.
        arr = np.asarray(im).astype(np.int64)
        arr = np.clip(arr >> 8 if mode != "I" or arr.max() > 255 else arr, 0, 255)
        gray = arr.astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        gray = np.clip(np.asarray(im), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    return np.asarray(im.convert("RGB"))


def _open_pil(data: bytes) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))
            if im.width * im.height > MAX_PIXELS:
                raise ImageDecodeError(f"image of {im.width}x{im.height} pixels is too large")
            im.load()
        except ImageDecodeError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise ImageDecodeError(f"image too large: {err}") from None
        except Image.UnidentifiedImageError:
            raise ImageDecodeError("not an image file (unrecognised format)") from None
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error,
                MemoryError) as err:
            raise ImageDecodeError(f"cannot decode image: {err}") from None
    return im


def _decode_any(data: bytes, exif_transpose: bool) -> np.ndarray:
    """Pillow path: every format and mode, tolerant of libjpeg warnings, strict on truncation."""
    im = _open_pil(data)
    if exif_transpose:
        im = ImageOps.exif_transpose(im)
    if im.width == 0 or im.height == 0:
        raise ImageDecodeError("image has no pixels")
    return np.ascontiguousarray(_pil_to_rgb(im))


def load_image(data: bytes, exif_transpose: bool = False) -> SourceImage:
    """Sniff and check an encoded image.  ImageDecodeError if it cannot become RGB pixels.

    A plain baseline RGB JPEG is checked lazily (see SourceImage) so that its entropy-coded data
    is decoded once, however it ends up stored.  Other JPEGs are checked here, by libjpeg in
    strict mode, before Pillow (which tolerates corrupt data) decodes them."""
    if not data:
        raise ImageDecodeError("empty file")
    if data.startswith(jpeg.SOI):
        try:
            info = jpeg.parse_header(data)
        except jpeg.JpegError:
            info = None        # headers we cannot walk: Pillow decides below
        if info is not None:
            if info.is_plain_rgb and not (
                    exif_transpose and info.exif_orientation not in (None, 1)):
                return SourceImage(info.width, info.height, data, info,
                                   exif_transpose=exif_transpose)
            try:
                jpeg.validate(data, info.components)
            except jpeg.JpegError as err:
                _check_jpeg_error(err)
    rgb = _decode_any(data, exif_transpose)
    return SourceImage(rgb.shape[1], rgb.shape[0], rgb=rgb, exif_transpose=exif_transpose)


def as_rgb_array(value: Any) -> np.ndarray:
    """An in-memory image (H x W x 3/4 or H x W uint8 array, or PIL image) as H x W x 3 uint8."""
    if isinstance(value, Image.Image):
        return np.ascontiguousarray(_pil_to_rgb(value))
    array = np.asarray(value)
    if array.dtype != np.uint8:
        raise TypeError(f"image arrays must be uint8, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"image array of shape {array.shape} is not H x W x 3")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"image array of shape {array.shape} has no pixels")
    return np.ascontiguousarray(array[:, :, :3])
