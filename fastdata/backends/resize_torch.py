"""The crop-and-resize of ``pixels.resample`` in torch, for images already on a GPU.

Same semantics as ``resize_crop_into`` (PIL's antialiased bilinear filter over a fractional box,
the taps that fall outside the source dropped and the rest renormalised, float32 weights,
rounded half up), computed as two small matrix products per image: rows, then columns.  The
source is the view's read area (``base.RegionPlan.slices``), so the filter reads exactly the
pixels the CPU kernel reads.  Within 1 level of the Numba kernel (tests/test_nvimgcodec_backend.py
checks it on the CPU, where torch runs the same ops).
"""
from __future__ import annotations

import math

import torch


def axis_weights(start: float, length: float, out_len: int, size: int,
                 device: torch.device) -> torch.Tensor:
    """float32 [out_len, size]: output i's weight of source index k along one axis, for the box
    [start, start + length) of a source of ``size`` pixels."""
    scale = length / out_len
    filterscale = max(scale, 1.0)
    i = torch.arange(out_len, dtype=torch.float64, device=device)
    center = start + (i + 0.5) * scale
    lo = torch.clamp(torch.trunc(center - filterscale + 0.5), min=0)
    hi = torch.clamp(torch.trunc(center + filterscale + 0.5), max=size)
    k = torch.arange(size, dtype=torch.float64, device=device)
    taps = (1.0 - ((k[None] - center[:, None] + 0.5) / filterscale).abs()).clamp(min=0.0)
    taps = torch.where((k[None] >= lo[:, None]) & (k[None] < hi[:, None]), taps, 0.0)
    return (taps / taps.sum(dim=1, keepdim=True)).to(torch.float32)


def resize_box(src: torch.Tensor, y0: float, x0: float, y1: float, x1: float, out_h: int,
               out_w: int) -> torch.Tensor:
    """uint8 [out_h, out_w, 3]: the box rows [y0, y1) x columns [x0, x1) (source pixels,
    fractional) of ``src`` (uint8 [H, W, 3], any device) resized; x0 > x1 mirrors the output
    left-right (the box read right to left).  The box is clamped to the source."""
    flip = x0 > x1
    if flip:
        x0, x1 = x1, x0
    height, width = src.shape[0], src.shape[1]
    y0, x0 = max(y0, 0.0), max(x0, 0.0)
    y1, x1 = min(y1, float(height)), min(x1, float(width))
    if not (y1 > y0 and x1 > x0) or out_h < 1 or out_w < 1:
        raise ValueError(f"empty crop box ({y0}, {x0}, {y1}, {x1}) or output {out_h}x{out_w}")
    wy = axis_weights(y0, y1 - y0, out_h, height, src.device)
    wx = axis_weights(x0, x1 - x0, out_w, width, src.device)
    if flip:
        wx = wx.flip(0)
    # Only the rows and columns some output reads take part (computed here: no device sync).
    r0, r1 = _reach(y0, y1 - y0, out_h, height)
    c0, c1 = _reach(x0, x1 - x0, out_w, width)
    pixels = src[r0:r1, c0:c1].to(torch.float32)
    tmp = (wy[:, r0:r1] @ pixels.reshape(r1 - r0, -1)).reshape(out_h, c1 - c0, 3)
    out = torch.einsum("jw,owc->ojc", wx[:, c0:c1], tmp)
    return torch.floor(out + 0.5).clamp_(0, 255).to(torch.uint8)


def _reach(start: float, length: float, out_len: int, size: int) -> tuple[int, int]:
    """[first, last + 1) of the source indices any output reads (axis_weights' windows)."""
    scale = length / out_len
    filterscale = max(scale, 1.0)
    first = max(math.trunc(start + 0.5 * scale - filterscale + 0.5), 0)
    last = min(math.trunc(start + (out_len - 0.5) * scale + filterscale + 0.5), size)
    return first, max(last, first + 1)
