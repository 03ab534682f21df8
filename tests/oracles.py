"""Slow, obviously correct references that tests compare the compiled kernels with."""
from __future__ import annotations

import math

import numpy as np


def _weights_reference(in_size: int, b0: float, length: float, out_len: int,
                       within_box: bool) -> np.ndarray:
    """Dense out_len x in_size float64 weights of one axis (the module docstring's formula)."""
    scale = length / out_len
    filterscale = max(scale, 1.0)
    support = filterscale
    center = b0 + (np.arange(out_len) + 0.5) * scale
    # int() truncates towards zero, as C's (int) cast in PIL; negatives are clamped to 0 anyway.
    lo_bound, hi_bound = (math.floor(b0), min(math.ceil(b0 + length), in_size)) if within_box \
        else (0, in_size)
    lo = np.maximum(np.trunc(center - support + 0.5), lo_bound)
    hi = np.minimum(np.trunc(center + support + 0.5), hi_bound)
    k = np.arange(in_size)[None, :]
    wgt = np.maximum(0.0, 1.0 - np.abs((k - center[:, None] + 0.5) / filterscale))
    wgt = np.where((k >= lo[:, None]) & (k < hi[:, None]), wgt, 0.0)
    return wgt / wgt.sum(axis=1, keepdims=True)


def resize_crop_reference(src: np.ndarray, y0: float, x0: float, h: float, w: float,
                          out_h: int, out_w: int, flip: bool = False,
                          within_box: bool = True) -> np.ndarray:
    """Slow float64 numpy version of ``resize_crop_into`` (same box clamping, PIL's pass order, no
    intermediate rounding), returning a new uint8 out_h x out_w x 3 array. For tests."""
    H, W = src.shape[:2]
    y1, x1 = min(y0 + h, H), min(x0 + w, W)
    y0, x0 = max(y0, 0.0), max(x0, 0.0)
    wy = _weights_reference(H, y0, y1 - y0, out_h, within_box)
    wx = _weights_reference(W, x0, x1 - x0, out_w, within_box)
    planes = src.astype(np.float64).transpose(2, 0, 1)  # C x H x W
    horiz = planes @ wx.T  # C x H x out_w: PIL's first pass
    out = (wy @ horiz).transpose(1, 2, 0)  # out_h x out_w x C
    out = np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)
    return out[:, ::-1] if flip else out
