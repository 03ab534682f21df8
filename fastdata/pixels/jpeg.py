"""The JPEG codec: header parsing, lossless metadata stripping, decode and encode.

The writer decodes with simplejpeg (the fastest full decode measured, GIL released) and encodes
with OpenCV (the fastest encoder, and FFCV's, so re-encoded bytes match FFCV's); both wheels ship
libjpeg-turbo, so no compiler or system library is needed.  The loader decodes regions through
libturbojpeg 3 (fastdata.pixels.libturbojpeg).  bench/jpeg_codecs.py has the measurements.
The header parser is ours: it walks the marker segments with a bounds check on every length, so
no file content can make it read out of range.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np
import simplejpeg
from numba import njit

SOI = b"\xff\xd8"
# Start-of-frame markers; 0xC4 (DHT), 0xC8 (JPG) and 0xCC (DAC) share the range but are not frames.
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_BASELINE_SOF = {0xC0, 0xC1}          # Huffman, sequential: what every fast path expects
_PROGRESSIVE_SOF = {0xC2}
_APP0, _APP1, _APP14, _APP15, _COM, _SOS = 0xE0, 0xE1, 0xEE, 0xEF, 0xFE, 0xDA


class JpegError(ValueError):
    """A JPEG stream that cannot be parsed or decoded."""


@dataclass(frozen=True)
class JpegInfo:
    """What a JPEG's header says.  width/height are as coded (before any EXIF rotation)."""
    width: int
    height: int
    components: int
    sof_marker: int
    adobe_transform: Optional[int]   # APP14 colour transform flag, None without an Adobe marker
    exif_orientation: Optional[int]  # EXIF tag 0x0112 (1 = upright), None when absent
    strippable: tuple[tuple[int, int], ...]  # (start, end) of APP1-13/APP15/COM segments

    @property
    def progressive(self) -> bool:
        return self.sof_marker in _PROGRESSIVE_SOF

    @property
    def is_plain_rgb(self) -> bool:
        """Baseline, three-component YCbCr: decodes to RGB by any reader with no conversion."""
        ycc = self.adobe_transform is None or self.adobe_transform == 1
        return self.sof_marker in _BASELINE_SOF and self.components == 3 and ycc


def _exif_orientation(segment: bytes) -> Optional[int]:
    """Orientation tag of an APP1 Exif payload (after the length), or None."""
    if not segment.startswith(b"Exif\0\0") or len(segment) < 14:
        return None
    tiff = segment[6:]
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None:
        return None
    (ifd,) = struct.unpack_from(order + "I", tiff, 4)
    if ifd + 2 > len(tiff):
        return None
    (count,) = struct.unpack_from(order + "H", tiff, ifd)
    for k in range(count):
        entry = ifd + 2 + 12 * k
        if entry + 12 > len(tiff):
            return None
        tag, typ, n = struct.unpack_from(order + "HHI", tiff, entry)
        if tag == 0x0112 and typ == 3 and n >= 1:
            return struct.unpack_from(order + "H", tiff, entry + 8)[0]
    return None


def parse_header(data: bytes) -> JpegInfo:
    """Parse the marker segments up to the first SOS; JpegError if they are malformed."""
    if not data.startswith(SOI):
        raise JpegError("not a JPEG (no SOI marker)")
    pos, n = 2, len(data)
    frame = None
    adobe = orientation = None
    strippable = []
    while True:
        # Markers may be preceded by any number of 0xFF fill bytes.
        while pos < n and data[pos] == 0xFF and pos + 1 < n and data[pos + 1] == 0xFF:
            pos += 1
        if pos + 4 > n:
            raise JpegError("truncated JPEG header")
        if data[pos] != 0xFF:
            raise JpegError(f"bad JPEG marker at byte {pos}")
        marker = data[pos + 1]
        if marker in (0x01,) or 0xD0 <= marker <= 0xD7:   # standalone markers, no length
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        end = pos + 2 + length
        if length < 2 or end > n:
            raise JpegError(f"JPEG segment 0x{marker:02X} at byte {pos} runs past the end")
        body = data[pos + 4:end]
        if marker in _SOF_MARKERS:
            if len(body) < 6:
                raise JpegError("short JPEG frame header")
            height, width = struct.unpack_from(">HH", body, 1)
            frame = (width, height, body[5], marker)
        elif marker == _APP14 and body.startswith(b"Adobe") and len(body) >= 12:
            adobe = body[11]
        elif marker == _APP1:
            if orientation is None:
                orientation = _exif_orientation(body)
            strippable.append((pos, end))
        elif (_APP1 < marker <= _APP15 and marker != _APP14) or marker == _COM:
            strippable.append((pos, end))
        elif marker == _SOS:
            break
        elif marker == 0xD9:
            raise JpegError("JPEG ends before any image data")
        pos = end
    if frame is None:
        raise JpegError("JPEG has no frame header")
    width, height, components, sof = frame
    if width == 0 or height == 0:
        raise JpegError(f"JPEG declares an empty image ({width}x{height})")
    return JpegInfo(width, height, components, sof, adobe, orientation, tuple(strippable))


def strip_metadata(data: bytes, info: JpegInfo) -> bytes:
    """The same JPEG without EXIF, XMP, ICC and comment segments: identical pixels, fewer bytes.

    JFIF (APP0) and Adobe (APP14) segments stay: decoders read the colour transform from them."""
    if not info.strippable:
        return data
    parts, pos = [], 0
    for start, end in info.strippable:
        parts.append(data[pos:start])
        pos = end
    parts.append(data[pos:])
    return b"".join(parts)


def decode(data: bytes, strict: bool = True) -> np.ndarray:
    """Decode a one- or three-component JPEG to an H x W x 3 uint8 RGB array.

    strict=True turns libjpeg warnings (corrupt or truncated data) into JpegError."""
    try:
        return simplejpeg.decode_jpeg(data, colorspace="RGB", strict=strict)
    except (ValueError, RuntimeError) as err:
        raise JpegError(str(err)) from None


@njit(cache=True, nogil=True)
def ends_with_eoi(data: np.ndarray) -> bool:
    """Whether JPEG bytes (uint8) end with the end-of-image marker FF D9: a record cut short
    does not (and a region or scaled decode may stop before it would notice)."""
    n = len(data)
    return n >= 2 and data[n - 2] == 0xFF and data[n - 1] == 0xD9


@njit(cache=True, nogil=True)
def quant_tables_valid(data: np.ndarray) -> bool:
    """Whether every quantisation table before the first scan has only non-zero entries, as
    the JPEG standard requires (libjpeg decodes zeroed tables to garbage without a warning).
    Malformed segments are left to the decoder, which reports them."""
    pos, n = 2, len(data)
    while pos + 4 <= n and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:                    # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        if marker == 0xDA or marker == 0xD9:
            return True
        end = pos + 2 + (np.int64(data[pos + 2]) << 8 | np.int64(data[pos + 3]))
        if end > n:
            return True
        if marker == 0xDB:
            t = pos + 4
            while t < end:
                wide = data[t] >> 4              # 0: 8-bit entries, 1: 16-bit
                t += 1
                for _ in range(64):
                    if t + wide >= end:
                        return True
                    value = np.int64(data[t]) << 8 | np.int64(data[t + 1]) if wide \
                        else np.int64(data[t])
                    if value == 0:
                        return False
                    t += 1 + wide
        pos = end
    return True


NO_EOI = "the record does not end with the end-of-image marker FF D9 (truncated?)"
ZERO_QUANT = "a quantisation table has zero entries (corrupt header)"


def decode_record(data: np.ndarray, accept_warnings: bool = False, min_height: int = 0,
                  min_width: int = 0) -> np.ndarray:
    """A stored JPEG record (uint8 array) decoded under the loader's rule for corrupt data:
    JpegError for a record that does not end with FF D9, a zeroed quantisation table, or data
    that libjpeg decodes only with a warning (stored records have none when intact: the writer
    re-encodes sources that warn, FFCV encodes with OpenCV).  ``accept_warnings`` decodes
    whatever libjpeg can, as FFCV does."""
    if not accept_warnings:
        if not ends_with_eoi(data):
            raise JpegError(NO_EOI)
        if not quant_tables_valid(data):
            raise JpegError(ZERO_QUANT)
    try:
        return simplejpeg.decode_jpeg(data, colorspace="RGB", strict=not accept_warnings,
                                      min_height=min_height, min_width=min_width)
    except (ValueError, RuntimeError) as err:
        raise JpegError(str(err)) from None


# The one libjpeg warning that real, intact photos give: junk between the data and the end
# marker.  Every other warning means corrupt or missing entropy-coded data.
_HARMLESS_WARNING = re.compile(r"Corrupt JPEG data: \d+ extraneous bytes before marker 0xd9")


def validate(data: bytes, components: int = 3) -> None:
    """Run the entropy decoder over the whole stream at the smallest DCT scale (cheap).

    Raises JpegError on any error or warning, which is what a truncated or corrupt file gives."""
    try:
        simplejpeg.decode_jpeg(data, colorspace="CMYK" if components == 4 else "RGB",
                               strict=True, min_height=1, min_width=1)
    except (ValueError, RuntimeError) as err:
        raise JpegError(str(err)) from None


def is_harmless(error: JpegError) -> bool:
    """Whether a validate() error is only junk before the end marker (the pixels are intact)."""
    return bool(_HARMLESS_WARNING.fullmatch(str(error)))


def encode(rgb: np.ndarray, quality: int = 90) -> bytes:
    """Encode an H x W x 3 uint8 RGB array as baseline JPEG with 4:2:0 chroma.

    This is exactly FFCV's encoder call (OpenCV on BGR), so the bytes match an FFCV-written file."""
    ok, buf = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise JpegError("OpenCV failed to encode the image")
    return buf.tobytes()
