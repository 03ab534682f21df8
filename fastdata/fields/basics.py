"""IntField (type 1) and FloatField (type 0): the value itself is the metadata; no payload."""
from __future__ import annotations

import math
import numbers
from typing import Any, Optional

import numpy as np

from .base import Encoded, accepts_ffcv_call, Field

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


class FloatField(Field):
    """A float64 per sample; reads back as a Python float."""

    TYPE_ID = 0

    @property
    def metadata_dtype(self) -> np.dtype:
        return np.dtype("<f8")

    @accepts_ffcv_call
    def encode(self, value: Any, index: int) -> Encoded:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise TypeError(f"FloatField needs a real number, got {type(value).__name__}")
        return Encoded(None, float(value))

    def decode(self, record: Any, payload: Optional[np.ndarray], side: Any) -> float:
        return float(record)


class IntField(Field):
    """A signed 64-bit integer per sample; reads back as a Python int."""

    TYPE_ID = 1

    @property
    def metadata_dtype(self) -> np.dtype:
        return np.dtype("<i8")

    @accepts_ffcv_call
    def encode(self, value: Any, index: int) -> Encoded:
        if isinstance(value, (float, np.floating)) and math.isfinite(value) and value == int(value):
            value = int(value)
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
            raise TypeError(f"IntField needs an integer, got {type(value).__name__}")
        value = int(value)
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValueError(f"IntField value {value} is outside the int64 range")
        return Encoded(None, value)

    def decode(self, record: Any, payload: Optional[np.ndarray], side: Any) -> int:
        return int(record)
