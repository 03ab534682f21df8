"""Batch ops on torch tensors: to tensor, to device, image layout, normalisation, dtype, and a
torch module as an op.  Each takes FFCV's arguments (names, order, defaults) where FFCV has the
op."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch
from numba import njit

from ..constants import IMAGENET_MEAN, IMAGENET_STD
from .base import BatchContext, BatchOp



class ToTensor(BatchOp):
    """numpy batch -> torch tensor sharing its memory (no copy).  Lists pass through."""

    position_independent = True

    def __call__(self, batch: Any, ctx: BatchContext) -> Any:
        return torch.from_numpy(batch) if isinstance(batch, np.ndarray) else batch


class ToTorchImage(BatchOp):
    """FFCV's ToTorchImage(channels_last, convert_back_int16): [B, H, W, C] -> [B, C, H, W]: a
    view in channels_last memory format (no copy), or a contiguous NCHW copy with
    ``channels_last=False``.  ``convert_back_int16``: an int16 batch (FFCV's float16
    NormalizeImage on the CPU hands its float16 bits on as int16) is viewed as float16."""

    position_independent = True

    def __init__(self, channels_last: bool = True, convert_back_int16: bool = True):
        self.channels_last = channels_last
        self.convert_back_int16 = convert_back_int16

    def __call__(self, batch: torch.Tensor, ctx: BatchContext) -> torch.Tensor:
        if batch.dim() != 4:
            raise ValueError(f"ToTorchImage needs a [B, H, W, C] batch, got {tuple(batch.shape)}")
        if self.convert_back_int16 and batch.dtype == torch.int16:
            batch = batch.view(torch.float16)
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


def torch_dtype(dtype: Any) -> torch.dtype:
    """A torch dtype for a torch or numpy dtype (np.float16, 'float32', ...)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    return torch.from_numpy(np.zeros(0, dtype=np.dtype(dtype))).dtype


@njit(cache=True, nogil=True)
def _lookup_pixels(images, table, out):
    """_lookup over C-contiguous [B, H, W, C] arrays seen as [B, pixels, C]; three channels
    unrolled (twice as fast as one flat loop with Numba 0.68 on this project's test machine)."""
    n, channels = images.shape[0], images.shape[3]
    pixels = images.reshape(n, -1, channels)
    result = out.reshape(n, -1, channels)
    for i in range(n):
        src, dst = pixels[i], result[i]
        if channels == 3:
            for p in range(src.shape[0]):
                dst[p, 0] = table[src[p, 0], 0]
                dst[p, 1] = table[src[p, 1], 1]
                dst[p, 2] = table[src[p, 2], 2]
        else:
            for p in range(src.shape[0]):
                for ch in range(channels):
                    dst[p, ch] = table[src[p, ch], ch]


@njit(cache=True, nogil=True)
def _lookup(images, table, out):
    """out[..., c] = table[images[..., c], c] over [B, H, W, C] arrays (any strides)."""
    for b in range(images.shape[0]):
        for r in range(images.shape[1]):
            for c in range(images.shape[2]):
                for ch in range(images.shape[3]):
                    out[b, r, c, ch] = table[images[b, r, c, ch], ch]


class NormalizeImage(Normalize):
    """FFCV's NormalizeImage(mean, std, type): ``(x - mean) / std`` per channel, mean and std
    in pixel units (0-255), output numpy dtype ``type`` (np.float16, np.float32, ...; a torch
    dtype is accepted too).

    uint8 images go through FFCV's lookup table: ``(arange(256) - mean) / std`` in float64, cast
    once to ``type``, so each value is FFCV's bit for bit (on the CPU and on the GPU).  The
    output keeps the input's layout ([B, H, W, C], or ToTorchImage's [B, C, H, W] view), in a
    per-slot buffer on the CPU.  One difference: for np.float16 FFCV's CPU path hands on the
    bits as int16 (for ToTorchImage to view back as float16); here the output is float16 at
    once.  Other dtypes in: Normalize's arithmetic (fp32, one rounding).  ``pixel_scale``
    (Normalize's keyword) applies to that arithmetic only."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], type: Any = np.float32,
                 *, pixel_scale: float = 255.0):
        out_dtype = torch_dtype(type)
        mean = np.asarray(mean, dtype=np.float64).reshape(-1)
        std = np.asarray(std, dtype=np.float64).reshape(-1)
        super().__init__(list(mean / 255.0), list(std / 255.0), out_dtype, pixel_scale)
        self.type = type
        numpy_type = torch.empty(0, dtype=out_dtype).numpy().dtype if out_dtype != \
            torch.bfloat16 else None
        table = (np.arange(256)[:, None] - mean[None, :]) / std[None, :]
        self._table = torch.from_numpy(table.astype(numpy_type)) if numpy_type is not None \
            else torch.from_numpy(table).to(out_dtype)
        self._tables: dict = {}
        self._lut_out: list = []

    def setup(self, ring_size: int) -> None:
        super().setup(ring_size)
        self._lut_out = [None] * ring_size

    def __call__(self, batch: torch.Tensor, ctx: BatchContext) -> torch.Tensor:
        channels = len(self.mean)
        if batch.dtype != torch.uint8 or batch.dim() != 4:
            return super().__call__(batch, ctx)
        if batch.shape[1] == channels and batch.shape[3] != channels:
            nhwc = lambda t: t.permute(0, 2, 3, 1)     # ToTorchImage's view
        elif batch.shape[3] == channels:
            nhwc = lambda t: t
        else:
            raise ValueError(f"NormalizeImage: no dimension of size {channels} in "
                             f"{tuple(batch.shape)}")
        out = self._lut_buffer(ctx.slot, batch)
        if batch.device.type == "cpu" and self.dtype != torch.bfloat16:
            # The lookup copies bit patterns: done on unsigned views (Numba has no float16).
            bits = np.dtype(f"u{out.element_size()}")
            images, result = nhwc(batch).numpy(), nhwc(out).numpy().view(bits)
            table = self._table.numpy().view(bits)
            if images.flags.c_contiguous and result.flags.c_contiguous:
                _lookup_pixels(images, table, result)
            else:
                _lookup(images, table, result)
            return out
        table = self._tables.get(batch.device)
        if table is None:
            table = self._tables[batch.device] = self._table.to(batch.device).reshape(-1)
        pixels = nhwc(batch).to(torch.int64) * channels + \
            torch.arange(channels, device=batch.device)
        nhwc(out).copy_(table[pixels])
        return out

    def _lut_buffer(self, slot: int, batch: torch.Tensor) -> torch.Tensor:
        """An output with the batch's shape and strides: the slot's on the CPU (made once)."""
        if batch.device.type != "cpu" or not self._lut_out:
            return torch.empty_like(batch, dtype=self.dtype)
        out = self._lut_out[slot]
        if out is None or out.shape != batch.shape or out.stride() != batch.stride():
            out = self._lut_out[slot] = torch.empty_like(batch, dtype=self.dtype)
        return out


class Squeeze(BatchOp):
    """FFCV's Squeeze(*dims): drop the given size-1 dimensions ([B, 1] -> [B] with
    ``Squeeze(1)``).  With no dims, every size-1 dimension but the batch one (FFCV's
    ``squeeze_()`` would also drop the batch dimension of a batch of one sample)."""

    def __init__(self, *dims: int):
        self.dims = tuple(int(d) for d in dims)

    def __call__(self, batch: torch.Tensor, ctx: BatchContext) -> torch.Tensor:
        if self.dims:
            return batch.squeeze(self.dims)
        dims = [d for d in range(1, batch.dim()) if batch.shape[d] == 1]
        return batch.squeeze(dims) if dims else batch


class Convert(BatchOp):
    """FFCV's Convert(target_dtype): cast the batch to ``target_dtype`` (torch or numpy)."""

    position_independent = True

    def __init__(self, target_dtype: Any):
        self.target_dtype = target_dtype
        self._dtype = torch_dtype(target_dtype)

    def __call__(self, batch: torch.Tensor, ctx: BatchContext) -> torch.Tensor:
        return batch.to(self._dtype)


class View(BatchOp):
    """FFCV's View(target_dtype): reinterpret the batch's bytes as ``target_dtype`` (torch or
    numpy), as ``Tensor.view(dtype)``: no copy; the last dimension scales by the ratio of the
    item sizes."""

    def __init__(self, target_dtype: Any):
        self.target_dtype = target_dtype
        self._dtype = torch_dtype(target_dtype)

    def __call__(self, batch: torch.Tensor, ctx: BatchContext) -> torch.Tensor:
        return batch.view(self._dtype)


class ModuleWrapper(BatchOp):
    """FFCV's ModuleWrapper(module): apply a torch module (or any callable) to the batch
    tensor; returns what it returns.  On the CPU it runs in the loader's producer thread (FFCV
    warns that this is slow; put it after ToDevice)."""

    def __init__(self, module: Any):
        if not callable(module):
            raise TypeError(f"ModuleWrapper needs a torch module or callable, got "
                            f"{type(module).__name__}")
        self.module = module

    def __call__(self, batch: Any, ctx: BatchContext) -> Any:
        return self.module(batch)
