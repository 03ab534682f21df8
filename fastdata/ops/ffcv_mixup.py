"""FFCV's Mixup: ImageMixup on the images, LabelMixup on the labels, MixupToOneHot to make
the mixed targets dense.

As in FFCV, each image is mixed with the one before it in the batch (position i with i - 1,
position 0 with the last): ``lam * x[i] + (1 - lam) * x[i - 1]``, computed in float64 and
truncated to the images' dtype; LabelMixup gives float32 rows ``(y[i], y[i - 1], lam)``.  The
image and the label pipelines must agree on each lambda: FFCV seeds numpy with the batch's last
sample index in both; here both draw from the counter-based RNG with the same key, so they agree
by construction, whatever ``num_workers``, and after a resume:

- ``same_lambda=True``: one Beta(alpha, alpha) per batch, keyed (seed, epoch, batch number *
  world_size + rank, OP_FFCV_MIXUP_BATCH);
- ``same_lambda=False``: one per sample, keyed (seed, epoch, sample index, OP_FFCV_MIXUP).

Beta variates come from ``rng.beta_draws``.  fastdata's own ``Mixup`` (timm's semantics, with
CutMix, label smoothing and a GPU path) is the richer alternative.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
from numba import njit

from ..rng import OP_FFCV_MIXUP, OP_FFCV_MIXUP_BATCH, beta_draws
from .augment import image_array, is_torch_image_view
from .base import BatchContext, BatchOp


def mixup_lambdas(alpha: float, same_lambda: bool, ctx: BatchContext) -> np.ndarray:
    """float64[B]: the lambda of each batch position (all equal with ``same_lambda``)."""
    n = len(ctx.indices)
    if same_lambda:
        key = np.array([int(ctx.batch) * ctx.world_size + ctx.rank], dtype=np.int64)
        lam = beta_draws(ctx.seed, ctx.epoch, key, OP_FFCV_MIXUP_BATCH,
                         np.array([alpha]), 0)
        return np.full(n, lam[0])
    keys = np.ascontiguousarray(ctx.indices, dtype=np.int64)
    return beta_draws(ctx.seed, ctx.epoch, keys, OP_FFCV_MIXUP, np.full(n, alpha), 0)


def _check_alpha(alpha: float, who: str) -> float:
    if not alpha > 0:
        raise ValueError(f"{who}: alpha must be > 0, got {alpha}")
    return float(alpha)


@njit(cache=True, nogil=True)
def _mix_previous(images, lam, out):
    """out[i] = lam[i] * images[i] + (1 - lam[i]) * images[i - 1] (float64, then truncated to
    the images' dtype, as FFCV's assignment casts)."""
    n = images.shape[0]
    flat = images.reshape(n, -1)
    dst = out.reshape(n, -1)
    for i in range(n):
        a, b = lam[i], 1.0 - lam[i]
        j = i - 1 if i > 0 else n - 1
        for p in range(flat.shape[1]):
            dst[i, p] = a * np.float64(flat[i, p]) + b * np.float64(flat[j, p])


class _PairMixup(BatchOp):
    """What ImageMixup and LabelMixup share: FFCV's arguments, and an output buffer per ring
    slot, made again only when a batch needs a larger or different one."""

    ffcv_jit_mode = None      # keeps its input's (FFCV: the previous state)

    def __init__(self, alpha: float, same_lambda: bool):
        self.alpha = _check_alpha(alpha, type(self).__name__)
        self.same_lambda = bool(same_lambda)
        self._out: list[Optional[np.ndarray]] = []

    def setup(self, ring_size: int) -> None:
        self._out = [None] * ring_size

    def _buffer(self, slot: int, shape: tuple, dtype: Any) -> np.ndarray:
        """An uninitialised [shape[0], ...] array of ``dtype``: slot ``slot``'s, reused."""
        if not self._out:
            return np.empty(shape, dtype=dtype)       # not run by a Loader
        out = self._out[slot]
        if out is None or out.shape[0] < shape[0] or out.shape[1:] != shape[1:] \
                or out.dtype != dtype:
            out = self._out[slot] = np.empty(shape, dtype=dtype)
        return out[:shape[0]]


class ImageMixup(_PairMixup):
    """FFCV's ImageMixup(alpha, same_lambda) on CPU images before ToDevice (the decoder's
    ``[B, H, W, C]`` layout): writes the mixed batch into a per-slot buffer made once."""

    def __call__(self, batch: Any, ctx: BatchContext) -> Any:
        import torch
        images = image_array(batch, "ImageMixup")
        lam = mixup_lambdas(self.alpha, self.same_lambda, ctx)
        out = self._buffer(ctx.slot, images.shape, images.dtype)
        _mix_previous(np.ascontiguousarray(images), lam, out)
        if not isinstance(batch, torch.Tensor):
            return out
        result = torch.from_numpy(out)
        # ToTorchImage's view in, the same view out.
        return result.permute(0, 3, 1, 2) if is_torch_image_view(batch) else result



class LabelMixup(_PairMixup):
    """FFCV's LabelMixup(alpha, same_lambda): integer labels [B] or [B, 1] -> float32 [B, 3]
    rows ``(y[i], y[i - 1], lam)``, with the lambdas ImageMixup of the same arguments draws."""

    def __call__(self, batch: Any, ctx: BatchContext) -> Any:
        import torch
        labels = batch.cpu().numpy() if isinstance(batch, torch.Tensor) else np.asarray(batch)
        if labels.ndim == 2 and labels.shape[1] >= 1:
            labels = labels[:, 0]        # FFCV reads labels[i][0]
        if labels.ndim != 1 or len(labels) != len(ctx.indices):
            raise ValueError(f"LabelMixup needs labels [B] or [B, 1], got {tuple(batch.shape)}")
        n = len(labels)
        out = self._buffer(ctx.slot, (n, 3), np.float32)
        out[:, 0] = labels
        out[:, 1] = np.roll(labels, 1)
        out[:, 2] = mixup_lambdas(self.alpha, self.same_lambda, ctx)
        if isinstance(batch, torch.Tensor):
            return torch.from_numpy(out).to(batch.device)
        return out


class MixupToOneHot(BatchOp):
    """FFCV's MixupToOneHot(num_classes): LabelMixup's [B, 3] rows -> [B, num_classes] targets
    (the input's dtype and device): ``lam`` at class y[i], then ``1 - lam`` at class y[i - 1].
    As in FFCV the second write replaces the first, so a sample mixed with one of its own class
    gets ``1 - lam`` there (not 1)."""

    def __init__(self, num_classes: int):
        if int(num_classes) != num_classes or num_classes < 1:
            raise ValueError(f"MixupToOneHot: num_classes must be a positive integer, got "
                             f"{num_classes}")
        self.num_classes = int(num_classes)
        self._out: list = []

    def setup(self, ring_size: int) -> None:
        self._out = [None] * ring_size

    def __call__(self, batch: Any, ctx: BatchContext) -> Any:
        import torch
        if not isinstance(batch, torch.Tensor) or batch.dim() != 2 or batch.shape[1] != 3:
            raise ValueError(f"MixupToOneHot needs LabelMixup's [B, 3] tensor, got "
                             f"{tuple(getattr(batch, 'shape', ()))}")
        first, second = batch[:, 0].long(), batch[:, 1].long()
        if batch.numel():
            lo = int(torch.minimum(first.min(), second.min()))
            hi = int(torch.maximum(first.max(), second.max()))
            if lo < 0 or hi >= self.num_classes:
                raise ValueError(f"MixupToOneHot: label {lo if lo < 0 else hi} is outside "
                                 f"[0, {self.num_classes})")
        rows = torch.arange(batch.shape[0], device=batch.device)
        out = self._buffer(ctx.slot, batch).zero_()
        out[rows, first] = batch[:, 2]
        out[rows, second] = 1 - batch[:, 2]
        return out

    def _buffer(self, slot: int, batch: Any) -> Any:
        """The slot's [B, num_classes] output (made once per slot, dtype and device)."""
        import torch
        shape = (batch.shape[0], self.num_classes)
        if not self._out:
            return torch.empty(shape, dtype=batch.dtype, device=batch.device)
        out = self._out[slot]
        if out is None or out.shape[0] < shape[0] or out.dtype != batch.dtype or \
                out.device != batch.device:
            out = self._out[slot] = torch.empty(shape, dtype=batch.dtype, device=batch.device)
        return out[:shape[0]]
