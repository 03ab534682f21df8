"""Batch ops on torch tensors: to tensor, to device, image layout, normalisation, dtype."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..constants import IMAGENET_MEAN, IMAGENET_STD
from .base import BatchContext, BatchOp



class ToTensor(BatchOp):
    """numpy batch -> torch tensor sharing its memory (no copy).  Lists pass through."""

    position_independent = True

    def __call__(self, batch: Any, ctx: BatchContext) -> Any:
        return torch.from_numpy(batch) if isinstance(batch, np.ndarray) else batch


class ToTorchImage(BatchOp):
    """uint8 [B, H, W, C] -> [B, C, H, W]: a view in channels_last memory format (no copy), or
    a contiguous NCHW copy with ``channels_last=False``."""

    position_independent = True

    def __init__(self, channels_last: bool = True):
        self.channels_last = channels_last

    def __call__(self, batch: torch.Tensor, ctx: BatchContext) -> torch.Tensor:
        if batch.dim() != 4:
            raise ValueError(f"ToTorchImage needs a [B, H, W, C] batch, got {tuple(batch.shape)}")
        out = batch.permute(0, 3, 1, 2)
        return out if self.channels_last else out.contiguous()


class ToDevice(BatchOp):
    """Copy the batch to ``device``.  From the loader's pinned ring buffers the copy is
    asynchronous (``non_blocking``) on the loader's side CUDA stream, so it overlaps compute."""

    position_independent = True

    def __init__(self, device: Any = "cuda", non_blocking: bool = True):
        self.device = torch.device(device)
        self.target_device = self.device.type
        self.non_blocking = non_blocking

    def __call__(self, batch: Any, ctx: BatchContext) -> Any:
        if not isinstance(batch, torch.Tensor) or batch.device == self.device:
            return batch
        return batch.to(self.device, non_blocking=self.non_blocking)


class Normalize(BatchOp):
    """``(x / 255 - mean) / std`` per channel, cast to ``dtype`` (float32, float16, bfloat16),
    on whatever device the batch is on.  ``mean`` and ``std`` are in [0, 1] units, as in
    torchvision; images may be [B, C, H, W] (after ToTorchImage) or [B, H, W, C].
    On the CPU the result goes into a per-slot buffer, reused: no allocation per batch."""

    position_independent = True

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 dtype: torch.dtype = torch.float32, pixel_scale: float = 255.0):
        if len(mean) != len(std) or min(std) <= 0:
            raise ValueError("mean and std need one value per channel, std > 0")
        self.mean, self.std, self.dtype = tuple(mean), tuple(std), dtype
        self.pixel_scale = float(pixel_scale)
        # x * scale + shift == (x / pixel_scale - mean) / std
        self._scale = torch.tensor([1.0 / (self.pixel_scale * s) for s in std])
        self._shift = torch.tensor([-m / s for m, s in zip(mean, std)])
        self._cache: dict = {}
        self._out: list[Optional[tuple]] = []

    def setup(self, ring_size: int) -> None:
        self._out = [None] * ring_size

    def _coefficients(self, batch: torch.Tensor, channel_dim: int):
        key = (batch.device, channel_dim)
        if key not in self._cache:
            shape = [1] * batch.dim()
            shape[channel_dim] = -1
            self._cache[key] = (self._scale.to(batch.device).view(shape),
                                self._shift.to(batch.device).view(shape))
        return self._cache[key]

    def __call__(self, batch: torch.Tensor, ctx: BatchContext) -> torch.Tensor:
        channels = len(self.mean)
        if batch.dim() == 4 and batch.shape[1] == channels:
            channel_dim = 1
        elif batch.shape[-1] == channels:
            channel_dim = batch.dim() - 1
        else:
            raise ValueError(f"Normalize: no dimension of size {channels} in {tuple(batch.shape)}")
        scale, shift = self._coefficients(batch, channel_dim)
        if batch.device.type != "cpu" or not self._out:
            # fp32 arithmetic, then one rounding to the output dtype.
            return torch.addcmul(shift, batch.to(torch.float32), scale).to(self.dtype)
        work, out = self._buffers(ctx.slot, batch)
        work.copy_(batch).mul_(scale).add_(shift)
        return work if out is None else out.copy_(work)

    def _buffers(self, slot: int, batch: torch.Tensor):
        """Per-slot fp32 work buffer and, for other dtypes, output buffer (made once)."""
        buffers = self._out[slot]
        if buffers is None or buffers[0].shape != batch.shape:
            work = torch.empty_like(batch, dtype=torch.float32)
            out = None if self.dtype == torch.float32 else torch.empty_like(batch,
                                                                            dtype=self.dtype)
            buffers = self._out[slot] = (work, out)
        return buffers


class NormalizeImage(Normalize):
    """FFCV's ``NormalizeImage(mean, std, dtype)``: mean and std in pixel units (0-255), and a
    numpy dtype accepted for ``dtype``."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], dtype: Any = torch.float32):
        if not isinstance(dtype, torch.dtype):
            dtype = {np.dtype("float16"): torch.float16, np.dtype("float32"): torch.float32,
                     np.dtype("float64"): torch.float64}[np.dtype(dtype)]
        super().__init__([m / 255.0 for m in mean], [s / 255.0 for s in std], dtype)


class Squeeze(BatchOp):
    """Drop size-1 dimensions other than the batch one ([B, 1] -> [B])."""

    def __call__(self, batch: torch.Tensor, ctx: BatchContext) -> torch.Tensor:
        dims = [d for d in range(1, batch.dim()) if batch.shape[d] == 1]
        return batch.squeeze(dims) if dims else batch


class Convert(BatchOp):
    """Cast the batch to ``dtype``."""

    position_independent = True

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype

    def __call__(self, batch: torch.Tensor, ctx: BatchContext) -> torch.Tensor:
        return batch.to(self.dtype)
