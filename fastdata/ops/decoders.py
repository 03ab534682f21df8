"""Decoders of the non-image fields: a batch of stored values gathered in one vectorised call."""
from __future__ import annotations

import numpy as np
from numba import njit

from ..fields import BytesField, FloatField, IntField, JSONField, NDArrayField
from .base import BatchContext, Decoder, register_default_decoder


@register_default_decoder
class IntDecoder(Decoder):
    """IntField -> int64[B, 1] (FFCV's shape; add Squeeze() for int64[B])."""

    field_types = (IntField,)

    def sample_shape(self, batch_size):
        return (1,), np.int64

    def prepare(self, ctx: BatchContext, out: np.ndarray) -> None:
        out[:len(ctx.indices), 0] = self.column[ctx.indices]


@register_default_decoder
class FloatDecoder(IntDecoder):
    """FloatField -> float64[B, 1]."""

    field_types = (FloatField,)

    def sample_shape(self, batch_size):
        return (1,), np.float64


@njit(cache=True, nogil=True)
def _gather(data: np.ndarray, ptrs: np.ndarray, sizes: np.ndarray, indices: np.ndarray,
            out: np.ndarray) -> None:
    # Pointers and sizes were validated against the file when it was opened.
    for k in range(len(indices)):
        ptr, size = ptrs[indices[k]], sizes[indices[k]]
        out[k, :size] = data[ptr:ptr + size]
        out[k, size:] = 0


@register_default_decoder
class NDArrayDecoder(Decoder):
    """NDArrayField / TorchTensorField -> dtype[B, *shape]."""

    field_types = (NDArrayField,)

    def bind(self, reader, name, field_index):
        super().bind(reader, name, field_index)
        self.field = reader.fields[name]
        self._ptrs = reader.payload_ptrs(name).astype(np.int64)
        self._sizes = reader.payload_sizes(name).astype(np.int64)

    def sample_shape(self, batch_size):
        return self.field.shape, self.field.dtype

    def prepare(self, ctx: BatchContext, out: np.ndarray) -> None:
        n = len(ctx.indices)
        raw = out[:n].reshape(n, -1).view(np.uint8)
        _gather(self.reader.data, self._ptrs, self._sizes, ctx.indices, raw)


@register_default_decoder
class BytesDecoder(NDArrayDecoder):
    """BytesField -> uint8[B, L] zero-padded to the longest value in the file (as FFCV)."""

    field_types = (BytesField,)

    def bind(self, reader, name, field_index):
        Decoder.bind(self, reader, name, field_index)
        self._ptrs = reader.payload_ptrs(name).astype(np.int64)
        self._sizes = reader.payload_sizes(name).astype(np.int64)
        self.max_size = max(int(self._sizes.max(initial=0)), 1)

    def sample_shape(self, batch_size):
        return (self.max_size,), np.uint8

    def prepare(self, ctx: BatchContext, out: np.ndarray) -> None:
        _gather(self.reader.data, self._ptrs, self._sizes, ctx.indices, out)


@register_default_decoder
class JSONDecoder(Decoder):
    """JSONField -> a list of the B parsed documents (JSON only, never unpickled)."""

    field_types = (JSONField,)

    def sample_shape(self, batch_size):
        return None, object

    def prepare(self, ctx: BatchContext, out: list) -> None:
        out[:] = [self.reader.read(int(i), self.name) for i in ctx.indices]
