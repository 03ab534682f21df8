"""BytesField (type 3): a variable-length byte string per sample, metadata (ptr, size)."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .base import Encoded, Field, RegionTable, check_ptr_column

PTR_SIZE_DTYPE = np.dtype([("ptr", "<u8"), ("size", "<u8")])


class BytesField(Field):
    """Arbitrary bytes (bytes, bytearray, memoryview or a 1-D uint8 array); reads back as bytes."""

    TYPE_ID = 3

    @property
    def metadata_dtype(self) -> np.dtype:
        return PTR_SIZE_DTYPE

    def to_payload(self, value: Any) -> bytes:
        if isinstance(value, np.ndarray):
            if value.dtype != np.uint8 or value.ndim != 1:
                raise TypeError(f"BytesField needs a 1-D uint8 array, got {value.dtype} "
                                f"with shape {value.shape}")
            return value.tobytes()
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value)
        raise TypeError(f"BytesField needs bytes, got {type(value).__name__}")

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
