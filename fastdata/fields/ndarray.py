"""NDArrayField (type 4): a fixed-shape, fixed-dtype array per sample; metadata is its pointer.

The descriptor arguments hold the shape (32 x u8, unused dimensions 0), the length of the dtype's
JSON description (u8 at byte 256), and that description from byte 264, exactly as FFCV lays them.
"""
from __future__ import annotations

import json
import math
from typing import Any, Optional, Sequence

import numpy as np

from ..format import ARGUMENTS_SIZE, FormatError
from .base import Encoded, accepts_ffcv_call, FixedSizeField, pack_arguments, unpack_arguments

MAX_DIMS = 32
ARGS_HEADER_DTYPE = np.dtype([("shape", "<u8", (MAX_DIMS,)), ("type_length", "<u8")])
DESCR_OFFSET = ARGS_HEADER_DTYPE.itemsize  # 264


class NDArrayField(FixedSizeField):
    """Arrays of one ``shape`` and ``dtype`` (C order, little-endian on disk)."""

    TYPE_ID = 4

    def __init__(self, dtype: Any, shape: Sequence[int]):
        self.dtype = np.dtype(dtype).newbyteorder("<") if np.dtype(dtype).byteorder == ">" \
            else np.dtype(dtype)
        self.shape = tuple(int(s) for s in shape)
        if self.dtype.names is not None or self.dtype.subdtype is not None or \
                self.dtype.hasobject or self.dtype.itemsize == 0:
            raise ValueError(f"NDArrayField needs a plain numeric dtype, got {self.dtype}")
        if not self.shape or len(self.shape) > MAX_DIMS or min(self.shape) <= 0:
            # FFCV strips trailing zeros from the stored shape, so a 0 dimension cannot round-trip.
            raise ValueError(f"NDArrayField shape {self.shape} needs 1 to {MAX_DIMS} positive sizes")
        self.nbytes = math.prod(self.shape) * self.dtype.itemsize
        if self.nbytes >= 1 << 63:
            raise ValueError(f"NDArrayField shape {self.shape} is impossibly large")

    def to_arguments(self, side_table: Optional[tuple[int, int]] = None) -> np.ndarray:
        header = np.zeros((), dtype=ARGS_HEADER_DTYPE)
        header["shape"][:len(self.shape)] = self.shape
        descr = json.dumps(self.dtype.descr).encode("ascii")
        header["type_length"] = len(descr)
        return pack_arguments(header, descr)

    @classmethod
    def from_arguments(cls, arguments: np.ndarray) -> "NDArrayField":
        header = unpack_arguments(arguments, ARGS_HEADER_DTYPE)
        shape = [int(s) for s in header["shape"]]
        while shape and shape[-1] == 0:
            shape.pop()
        length = int(header["type_length"])
        if length > ARGUMENTS_SIZE - DESCR_OFFSET:
            raise FormatError(f"array dtype description length {length} overflows the arguments")
        try:
            descr = json.loads(arguments[DESCR_OFFSET:DESCR_OFFSET + length].tobytes()
                               .decode("ascii"))
            if not isinstance(descr, list) or len(descr) != 1 or len(descr[0]) != 2:
                raise ValueError("exactly one (name, type) entry is supported")
            dtype = np.dtype(descr[0][1])
            return cls(dtype, shape)
        except (ValueError, TypeError, UnicodeDecodeError) as err:
            raise FormatError(f"bad array field arguments (shape {shape}): {err}") from None

    @accepts_ffcv_call
    def encode(self, value: Any, index: int) -> Encoded:
        array = np.asarray(value)
        if array.shape != self.shape:
            # FFCV stores value.reshape(-1), so it takes any shape of the same element count and
            # reads it back in the field's shape; a mismatch is refused here instead of silently
            # rearranging the values.
            hint = (f"; FFCV would store it flattened and read it back as {self.shape}: "
                    f"reshape it first if that is meant"
                    if array.size == math.prod(self.shape) else "")
            raise ValueError(f"array of shape {array.shape} where the field expects "
                             f"{self.shape}{hint}")
        if array.dtype != self.dtype:
            if not np.can_cast(array.dtype, self.dtype, casting="same_kind"):
                raise TypeError(f"array of dtype {array.dtype} cannot be stored as {self.dtype}")
            array = array.astype(self.dtype)
        return Encoded(np.ascontiguousarray(array).tobytes(), None)


    def decode(self, record: Any, payload: Optional[np.ndarray], side: Any) -> np.ndarray:
        return np.frombuffer(payload.tobytes(), dtype=self.dtype).reshape(self.shape)
