"""RGBImageField (type 2): one RGB image per sample, stored as JPEG or as raw pixels.

Metadata is FFCV's packed 13-byte record (mode 0 = jpg / 1 = raw, width, height, data pointer).
FFCV leaves the descriptor arguments zero and ignores them; fastdata puts its write settings
there, and the location of a side table holding every image's original (width, height) before
``max_resolution`` shrank it, which later maps crop boxes and label maps back to the source.
A file written by FFCV simply has no side table: original size = stored size.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

from ..format import FormatError
from ..pixels import jpeg
from ..pixels.images import SourceImage, as_rgb_array, load_image
from ..pixels.resize import resize_area, size_within
from .base import Encoded, accepts_ffcv_call, Field, RegionTable, pack_arguments, unpack_arguments

MODE_JPG, MODE_RAW = 0, 1
WRITE_MODES = ("raw", "jpg", "proportion", "smart")
MAX_SIDE = 65535   # width and height are u2 in the metadata

IMAGE_METADATA_DTYPE = np.dtype([
    ("mode", "<u1"), ("width", "<u2"), ("height", "<u2"), ("data_ptr", "<u8")])

ARGS_MAGIC = b"FDIM"
ARGS_DTYPE = np.dtype([
    ("magic", "S4"), ("version", "u1"), ("write_mode", "u1"), ("jpeg_quality", "u1"),
    ("flags", "u1"), ("max_resolution", "<u4"), ("compress_probability", "<f4"),
    ("smart_threshold", "<u8"), ("seed", "<u8"), ("side_ptr", "<u8"), ("side_count", "<u8"),
])
FLAG_EXIF_TRANSPOSE, FLAG_KEEP_SOURCE_JPEG = 1, 2


class RGBImageField(Field):
    """Images, stored per FFCV's ``write_mode``:

    - ``raw``: H x W x 3 uint8 pixels (fastest to read, largest);
    - ``jpg``: JPEG.  A source JPEG that needs no resizing is stored as it is (less its metadata
      segments) when ``keep_source_jpeg`` is on (the default): no second generation of loss and no
      encode cost.  Everything else is encoded at ``jpeg_quality`` with 4:2:0 chroma, as FFCV does;
    - ``proportion``: JPEG with probability ``compress_probability``, raw otherwise.  The draw is
      seeded by (``seed``, sample index), so a rewrite gives the same file;
    - ``smart``: JPEG when the raw pixels would exceed ``smart_threshold`` bytes.

    ``max_resolution`` caps the longest side (area-interpolated downscale, never upscaled).
    Values may be paths, encoded image bytes, SourceImage, PIL images or uint8 arrays.
    """

    TYPE_ID = 2
    side_table_dtype = np.dtype([("width", "<u4"), ("height", "<u4")])
    #: reading: decode JPEG data that libjpeg decodes only with a warning (set by the Reader)
    accept_jpeg_warnings = False

    def __init__(self, write_mode: str = "raw", max_resolution: Optional[int] = None,
                 smart_threshold: Optional[int] = None, jpeg_quality: int = 90,
                 compress_probability: Optional[float] = 0.5, keep_source_jpeg: bool = True,
                 exif_transpose: bool = False, seed: int = 0):
        if write_mode not in WRITE_MODES:
            raise ValueError(f"write_mode must be one of {WRITE_MODES}, got {write_mode!r}")
        if max_resolution is not None and not 1 <= int(max_resolution) <= MAX_SIDE:
            raise ValueError(f"max_resolution must be in [1, {MAX_SIDE}], got {max_resolution}")
        if not 1 <= int(jpeg_quality) <= 100:
            raise ValueError(f"jpeg_quality must be in [1, 100], got {jpeg_quality}")
        if compress_probability is None:
            # FFCV's meaning: the argument is ignored unless write_mode is 'proportion'.
            if write_mode == "proportion":
                raise ValueError("write_mode='proportion' needs compress_probability (the "
                                 "probability of storing an image as JPEG), got None")
        elif not 0.0 <= float(compress_probability) <= 1.0:
            raise ValueError(f"compress_probability must be in [0, 1], got {compress_probability}")
        self.write_mode = write_mode
        self.max_resolution = int(max_resolution) if max_resolution else None
        self.smart_threshold = smart_threshold
        self.jpeg_quality = int(jpeg_quality)
        self.compress_probability = None if compress_probability is None \
            else float(compress_probability)
        self.keep_source_jpeg = keep_source_jpeg
        self.exif_transpose = exif_transpose
        self.seed = int(seed)
        self._side_table: Optional[tuple[int, int]] = None

    def __repr__(self) -> str:
        return (f"RGBImageField(write_mode={self.write_mode!r}, max_resolution="
                f"{self.max_resolution}, jpeg_quality={self.jpeg_quality}, compress_probability="
                f"{self.compress_probability}, smart_threshold={self.smart_threshold}, "
                f"keep_source_jpeg={self.keep_source_jpeg}, exif_transpose={self.exif_transpose})")

    @property
    def proportion(self) -> Optional[float]:
        """FFCV's attribute name for ``compress_probability``."""
        return self.compress_probability

    @property
    def metadata_dtype(self) -> np.dtype:
        return IMAGE_METADATA_DTYPE

    @property
    def side_table_location(self) -> Optional[tuple[int, int]]:
        return self._side_table

    def to_arguments(self, side_table: Optional[tuple[int, int]] = None) -> np.ndarray:
        args = np.zeros((), dtype=ARGS_DTYPE)
        args["magic"] = ARGS_MAGIC
        args["version"] = 1
        args["write_mode"] = WRITE_MODES.index(self.write_mode)
        args["jpeg_quality"] = self.jpeg_quality
        args["flags"] = (FLAG_EXIF_TRANSPOSE * self.exif_transpose
                         | FLAG_KEEP_SOURCE_JPEG * self.keep_source_jpeg)
        args["max_resolution"] = self.max_resolution or 0
        args["compress_probability"] = np.nan if self.compress_probability is None \
            else self.compress_probability
        args["smart_threshold"] = self.smart_threshold or 0
        args["seed"] = self.seed & 0xFFFFFFFFFFFFFFFF
        if side_table is not None:
            args["side_ptr"], args["side_count"] = side_table
        return pack_arguments(args)

    @classmethod
    def from_arguments(cls, arguments: np.ndarray) -> "RGBImageField":
        args = unpack_arguments(arguments, ARGS_DTYPE)
        if bytes(args["magic"]) != ARGS_MAGIC:
            return cls()      # written by FFCV: settings unknown, no side table
        try:
            field = cls(write_mode=WRITE_MODES[int(args["write_mode"])],
                        max_resolution=int(args["max_resolution"]) or None,
                        smart_threshold=int(args["smart_threshold"]) or None,
                        jpeg_quality=int(args["jpeg_quality"]),
                        compress_probability=None if np.isnan(args["compress_probability"])
                        else float(args["compress_probability"]),
                        keep_source_jpeg=bool(args["flags"] & FLAG_KEEP_SOURCE_JPEG),
                        exif_transpose=bool(args["flags"] & FLAG_EXIF_TRANSPOSE),
                        seed=int(args["seed"]))
        except (IndexError, ValueError) as err:
            raise FormatError(f"bad image field arguments: {err}") from None
        if int(args["side_count"]):
            field._side_table = (int(args["side_ptr"]), int(args["side_count"]))
        return field

    # -- writing --------------------------------------------------------------------------------
    def _source(self, value: Any) -> SourceImage | np.ndarray:
        if isinstance(value, SourceImage):
            return value
        if isinstance(value, (str, os.PathLike)):
            with open(value, "rb") as f:
                value = f.read()
        if isinstance(value, (bytes, bytearray, memoryview)):
            return load_image(bytes(value), exif_transpose=self.exif_transpose)
        return as_rgb_array(value)

    def _store_as_jpeg(self, index: int, width: int, height: int) -> bool:
        if self.write_mode == "jpg":
            return True
        if self.write_mode == "proportion":
            return bool(np.random.default_rng((self.seed, index)).random()
                        < self.compress_probability)
        if self.write_mode == "smart":
            return self.smart_threshold is not None and width * height * 3 > self.smart_threshold
        return False

    @accepts_ffcv_call
    def encode(self, value: Any, index: int) -> Encoded:
        source = self._source(value)
        if isinstance(source, np.ndarray):
            orig_h, orig_w = source.shape[:2]
        else:
            orig_w, orig_h = source.width, source.height
        width, height = size_within(orig_w, orig_h, self.max_resolution)
        if max(width, height) > MAX_SIDE:
            raise ValueError(f"image of {width}x{height} exceeds the format's {MAX_SIDE}-pixel "
                             f"side limit; set max_resolution")
        as_jpeg = self._store_as_jpeg(index, width, height)
        payload = None
        if (as_jpeg and self.keep_source_jpeg and isinstance(source, SourceImage)
                and (width, height) == (orig_w, orig_h)):
            payload = source.stored_jpeg()
        if payload is None:
            rgb = source if isinstance(source, np.ndarray) else source.rgb()
            rgb = resize_area(rgb, width, height)
            # Raw pixels go to the page as the array itself: no intermediate bytes copy.
            payload = jpeg.encode(rgb, self.jpeg_quality) if as_jpeg \
                else np.ascontiguousarray(rgb).reshape(-1)
        mode = MODE_JPG if as_jpeg else MODE_RAW
        return Encoded(payload, (mode, width, height), side=(orig_w, orig_h))

    def metadata_record(self, meta: Any, ptr: int) -> tuple:
        return (*meta, ptr)

    # -- reading --------------------------------------------------------------------------------
    def payload_ptrs(self, column: np.ndarray) -> np.ndarray:
        return column["data_ptr"]

    def payload_sizes(self, column: np.ndarray, regions: RegionTable, name: str) -> np.ndarray:
        mode, width, height = column["mode"], column["width"], column["height"]
        bad = (mode > MODE_RAW) | (width == 0) | (height == 0)
        if bad.any():
            i = int(np.argmax(bad))
            raise FormatError(f"sample {i}, field {name!r}: bad image record (mode {mode[i]}, "
                              f"{width[i]}x{height[i]})")
        # A JPEG is its whole region; raw pixels are exactly H x W x 3 bytes, as both writers
        # store them, so a raw record whose size disagrees with its region is corrupt.
        sizes = regions.sizes_at(column["data_ptr"], name)
        raw_sizes = width.astype(np.uint64) * height.astype(np.uint64) * np.uint64(3)
        wrong_raw = (mode == MODE_RAW) & (raw_sizes != sizes)
        if wrong_raw.any():
            i = int(np.argmax(wrong_raw))
            raise FormatError(f"sample {i}, field {name!r}: raw image of {width[i]}x{height[i]} "
                              f"is {raw_sizes[i]} bytes but its allocated region holds "
                              f"{sizes[i]} bytes")
        empty = sizes == 0
        if empty.any():
            raise FormatError(f"sample {int(np.argmax(empty))}, field {name!r}: empty JPEG")
        return sizes

    def check_side_table(self, column: np.ndarray, table: np.ndarray, name: str) -> None:
        # max_resolution only shrinks, side by side (EXIF transposition happens before both
        # sizes are taken); payload_sizes has checked that stored sides are >= 1, so a 0 fails.
        orig_w, orig_h = table["width"], table["height"]
        bad = (orig_w < column["width"]) | (orig_h < column["height"])
        if bad.any():
            i = int(np.argmax(bad))
            raise FormatError(f"sample {i}, field {name!r}: original size {orig_w[i]}x{orig_h[i]} "
                              f"in the side table is smaller than the stored "
                              f"{column['width'][i]}x{column['height'][i]}")

    def decode(self, record: Any, payload: Optional[np.ndarray], side: Any) -> np.ndarray:
        height, width = int(record["height"]), int(record["width"])
        if int(record["mode"]) == MODE_RAW:
            return payload.reshape(height, width, 3).copy()
        # Check the JPEG's own size before decoding: a corrupt header could ask for gigabytes.
        info = jpeg.parse_header(payload.tobytes())
        if (info.width, info.height) != (width, height):
            raise FormatError(f"stored JPEG is {info.width}x{info.height} but its record "
                              f"says {width}x{height}")
        try:
            return jpeg.decode_record(payload, self.accept_jpeg_warnings)
        except jpeg.JpegError as err:
            raise FormatError(f"cannot decode JPEG: {err}") from None

