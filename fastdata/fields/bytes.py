"""BytesField (type 3): a variable-length byte string per sample, metadata (ptr, size)."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .base import Encoded, accepts_ffcv_call, Field, RegionTable, check_ptr_column

PTR_SIZE_DTYPE = np.dtype([("ptr", "<u8"), ("size", "<u8")])


class BytesField(Field):
    """Arbitrary bytes (bytes, bytearray, memoryview or a 1-D array); reads back as bytes.

    A 1-D array of another dtype is stored as FFCV stores it: one byte per element, each
    element cast to uint8 (``[1, 2, 300]`` of int64 is 3 bytes).  FFCV's cast wraps or truncates
    values that are not whole numbers in 0..255 without a word; fastdata refuses those arrays
    (ValueError naming the first such element), so every stored byte equals its element."""

    TYPE_ID = 3

    @property
    def metadata_dtype(self) -> np.dtype:
        return PTR_SIZE_DTYPE

    def to_payload(self, value: Any) -> bytes:
        if isinstance(value, np.ndarray):
            if value.ndim != 1:
                raise TypeError(f"BytesField needs a 1-D array, got shape {value.shape}")
            if value.dtype == np.uint8:
                return value.tobytes()
            if value.dtype.kind not in "biuf":
                raise TypeError(f"BytesField cannot store an array of dtype {value.dtype}")
            with np.errstate(invalid="ignore"):
                cast = value.astype(np.uint8)      # what FFCV's buffer[:] = value stores
                lossy = cast != value
            if lossy.any():
                k = int(np.argmax(lossy))
                raise ValueError(f"BytesField stores one byte per element: element {k} "
                                 f"({value[k]}) of this {value.dtype} array is not a whole "
                                 f"number in 0..255 (FFCV would store it as {cast[k]}); convert "
                                 f"the array yourself (.astype(np.uint8), or .view(np.uint8) "
                                 f"for its raw bytes)")
            return cast.tobytes()
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value)
        raise TypeError(f"BytesField needs bytes, got {type(value).__name__}")

    @accepts_ffcv_call
    def encode(self, value: Any, index: int) -> Encoded:
        payload = self.to_payload(value)
        return Encoded(payload, len(payload))

    def metadata_record(self, meta: Any, ptr: int) -> tuple:
        return (ptr, meta)

    def payload_ptrs(self, column: np.ndarray) -> np.ndarray:
        return column["ptr"]

    def payload_sizes(self, column: np.ndarray, regions: RegionTable, name: str) -> np.ndarray:
        check_ptr_column(column["ptr"], column["size"], regions, name)
        return column["size"]

    def decode(self, record: Any, payload: Optional[np.ndarray], side: Any) -> bytes:
        return payload.tobytes()
