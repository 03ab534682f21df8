"""Dense [B, C] soft targets from stored top-k teacher outputs.

Densify modes (ml-dr's names; FKD's equivalents in brackets):

- ``smooth`` [marginal_smoothing]: the top-k probabilities at their ids and the leftover mass
  ``1 - sum(top-k)`` spread evenly over the other C - k classes (falls back to ``zeros`` where the
  stored probabilities sum to more than 1);
- ``zeros``: softmax over the stored top-k probabilities at their ids, zeros elsewhere (ml-dr's
  default; note it applies softmax to probabilities, which flattens them);
- ``renorm`` [marginal_renorm]: the top-k probabilities scaled to sum to 1, zeros elsewhere.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..fields.topk import TopKField
from .base import BatchContext, Decoder, register_default_decoder

DENSIFY_MODES = ("smooth", "zeros", "renorm")
_MODE_IDS = {name: i for i, name in enumerate(DENSIFY_MODES)}


@njit(cache=True, nogil=True)
def densify(ids: np.ndarray, probs: np.ndarray, mode: int, out: np.ndarray) -> None:
    """out[b] (float32[C]) from ids[b] (int64[k]) and probs[b] (float32[k]); mode indexes
    DENSIFY_MODES."""
    batch, k = ids.shape
    classes = out.shape[1]
    for b in range(batch):
        total = 0.0
        for j in range(k):
            total += probs[b, j]
        row_mode = mode
        if row_mode == 0 and (total > 1.0 or classes == k):
            row_mode = 1
        if row_mode == 0:
            out[b, :] = (1.0 - total) / (classes - k)
            for j in range(k):
                out[b, ids[b, j]] = probs[b, j]
        elif row_mode == 1:
            out[b, :] = 0.0
            peak = probs[b, 0]
            for j in range(k):
                peak = max(peak, probs[b, j])
            z = 0.0
            for j in range(k):
                z += np.exp(probs[b, j] - peak)
            for j in range(k):
                out[b, ids[b, j]] = np.exp(probs[b, j] - peak) / z
        else:
            out[b, :] = 0.0
            for j in range(k):
                out[b, ids[b, j]] = probs[b, j] / total if total > 0 else 1.0 / k


def gather_topk(data: np.ndarray, ptrs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids int64[n, k], probs float32[n, k]) of the top-k payloads at ``ptrs`` (validated)."""
    raw = data[ptrs.astype(np.int64)[:, None] + np.arange(4 * k)]
    ids = raw[:, :2 * k].copy().view("<i2").astype(np.int64)
    probs = raw[:, 2 * k:].copy().view("<f2").astype(np.float32)
    return ids, probs


@register_default_decoder
class TeacherTargets(Decoder):
    """TopKField -> float32 [B, num_classes] dense soft targets (see the module docstring)."""

    def __init__(self, num_classes: int = 1000, densify: str = "smooth"):
        if densify not in DENSIFY_MODES:
            raise ValueError(f"densify must be one of {DENSIFY_MODES}, got {densify!r}")
        self.num_classes = int(num_classes)
        self.densify = densify

    field_types = (TopKField,)

    def bind(self, reader, name, field_index):
        super().bind(reader, name, field_index)
        field = reader.fields[name]
        self.k = field.k
        self._ptrs = reader.payload_ptrs(name).astype(np.int64)
        # densify() writes at these ids: check them all once, here, not in the kernel.
        for start in range(0, len(reader), 1 << 16):
            ids, _ = gather_topk(reader.data, self._ptrs[start:start + (1 << 16)], self.k)
            if ids.size and ids.max() >= self.num_classes:
                bad = start + int(np.argmax(ids.max(axis=1)))
                raise ValueError(f"sample {bad}, field {name!r}: class id {int(ids.max())} >= "
                                 f"num_classes {self.num_classes}")

    def sample_shape(self, batch_size):
        return (self.num_classes,), np.float32

    def prepare(self, ctx: BatchContext, out: np.ndarray) -> None:
        ids, probs = gather_topk(self.reader.data, self._ptrs[ctx.indices], self.k)
        densify(ids, probs, _MODE_IDS[self.densify], out[:len(ctx.indices)])
