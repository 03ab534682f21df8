"""TorchTensorField (type 6): stored exactly like NDArrayField, with the matching numpy dtype.

torch is not needed to write or read it: a torch dtype is mapped by name, and values read back as
numpy arrays (as in FFCV, whose reader rebuilds the field as a numpy-typed array field)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .base import Encoded, accepts_ffcv_call
from .ndarray import NDArrayField

_TORCH_TO_NUMPY = {
    "float64": "<f8", "float32": "<f4", "float16": "<f2", "int64": "<i8", "int32": "<i4",
    "int16": "<i2", "int8": "i1", "uint8": "u1", "bool": "?", "complex64": "<c8",
    "complex128": "<c16", "uint16": "<u2", "uint32": "<u4", "uint64": "<u8",
}


def numpy_dtype_of(dtype: Any) -> np.dtype:
    """The numpy dtype for a torch dtype (``torch.float32``) or anything numpy understands."""
    text = str(dtype)
    if text.startswith("torch."):
        name = text[len("torch."):]
        if name not in _TORCH_TO_NUMPY:
            raise ValueError(f"torch dtype {text} has no numpy equivalent to store")
        return np.dtype(_TORCH_TO_NUMPY[name])
    return np.dtype(dtype)


class TorchTensorField(NDArrayField):
    """Tensors of one ``shape`` and ``dtype`` (a torch or numpy dtype)."""

    TYPE_ID = 6

    def __init__(self, dtype: Any, shape: Sequence[int]):
        super().__init__(numpy_dtype_of(dtype), shape)

    @accepts_ffcv_call
    def encode(self, value: Any, index: int) -> Encoded:
        if hasattr(value, "detach") and hasattr(value, "numpy"):
            value = value.detach().cpu().numpy()
        return super().encode(value, index)
