"""FFCV's data-poisoning ops, chosen by sample index: Poison (blend a mask into the images of
given samples) and ReplaceLabel (give given samples another label).  Nothing random: the same
samples are changed in every epoch.  Both work in place, where FFCV's sit: Poison on the
decoder's uint8 ``[B, H, W, C]`` images before ToDevice, ReplaceLabel on the integer labels."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from numba import njit

from .augment import RawArrayOp, image_array
from .base import BatchContext


def _sorted_indices(indices: Sequence[int], who: str) -> np.ndarray:
    values = np.sort(np.asarray(indices, dtype=np.int64).reshape(-1))
    if values.size and values[0] < 0:
        raise ValueError(f"{who}: sample indices must be >= 0, got {int(values[0])}")
    return values


@njit(cache=True, nogil=True)
def _poison(images, rows, keep, mask, low, high):
    """FFCV's arithmetic per pixel: t = float32(x); t = float32(t * keep); t = float32(t +
    mask); clip to [low, high] in float32; truncate to uint8."""
    for i in rows:
        img = images[i]
        for r in range(img.shape[0]):
            for c in range(img.shape[1]):
                for ch in range(img.shape[2]):
                    t = np.float32(img[r, c, ch])
                    t = np.float32(t * keep[r, c, ch])
                    t = np.float32(t + mask[r, c, ch])
                    if t < low:
                        t = low
                    elif t > high:
                        t = high
                    img[r, c, ch] = np.uint8(t)


class Poison(RawArrayOp):
    """FFCV's Poison: for each sample whose index is in ``indices``, blend ``mask`` into its
    image with opacity ``alpha`` and clamp: ``clip(x * (1 - alpha) + mask * alpha, *clamp)``,
    in place, with FFCV's float32 / float64 steps (``_poison``).

    mask: [H, W, C] values (the images' size); alpha: opacity, [H, W] (FFCV's form) or a scalar;
    indices: sample indices (file record numbers); clamp: (low, high) within [0, 255]."""

    def __init__(self, mask: np.ndarray, alpha: Any, indices: Sequence[int],
                 clamp: tuple[int, int] = (0, 255)):
        mask = np.asarray(mask)
        if mask.ndim != 3:
            raise ValueError(f"Poison: mask must be [H, W, C], got shape {mask.shape}")
        alpha = np.asarray(alpha)
        if alpha.ndim not in (0, 2) or (alpha.ndim == 2 and alpha.shape != mask.shape[:2]):
            raise ValueError(f"Poison: alpha must be a scalar or [H, W] = {mask.shape[:2]}, "
                             f"got shape {alpha.shape}")
        low, high = clamp
        if not 0 <= low <= high <= 255:
            raise ValueError(f"Poison: clamp must be (low, high) with 0 <= low <= high <= 255, "
                             f"got {clamp}")
        self.mask, self.alpha, self.clamp = mask, alpha, (low, high)
        self.indices = _sorted_indices(indices, "Poison")
        # FFCV's: alpha repeated over the channels keeps its dtype; the mask is weighted in
        # float64.
        channel_alpha = np.repeat(np.broadcast_to(alpha, mask.shape[:2])[:, :, None],
                                  mask.shape[2], axis=2)
        self._keep = np.ascontiguousarray(1 - channel_alpha)
        self._weighted_mask = np.ascontiguousarray(mask.astype(np.float64) * channel_alpha)

    def __call__(self, batch: Any, ctx: BatchContext) -> Any:
        images = image_array(batch, "Poison")
        if images.dtype != np.uint8:
            raise ValueError(f"Poison needs uint8 images, got {images.dtype}")
        if images.shape[1:] != self.mask.shape:
            raise ValueError(f"Poison: mask is {self.mask.shape}, images are "
                             f"{images.shape[1:]}")
        rows = np.flatnonzero(np.isin(ctx.indices, self.indices))
        if rows.size:
            _poison(images, rows, self._keep, self._weighted_mask, np.float32(self.clamp[0]),
                    np.float32(self.clamp[1]))
        return batch


class ReplaceLabel(RawArrayOp):
    """FFCV's ReplaceLabel: the samples whose index is in ``indices`` get label ``new_label``
    (in place; labels [B] or [B, 1], as IntDecoder gives them, on any device)."""

    def __init__(self, indices: Sequence[int], new_label: int):
        self.indices = _sorted_indices(indices, "ReplaceLabel")
        self.new_label = new_label

    def __call__(self, batch: Any, ctx: BatchContext) -> Any:
        import torch
        if isinstance(batch, torch.Tensor):
            rows = torch.from_numpy(np.isin(ctx.indices, self.indices)).to(batch.device)
        else:
            rows = np.isin(ctx.indices, self.indices)
        if getattr(batch, "ndim", 0) not in (1, 2) or batch.shape[0] != len(ctx.indices):
            raise ValueError(f"ReplaceLabel needs labels [B] or [B, 1], got "
                             f"{tuple(getattr(batch, 'shape', ()))}")
        batch[rows] = self.new_label
        return batch
