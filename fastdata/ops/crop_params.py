"""Crop boxes, drawn before any pixel is touched (Numba, callable from kernels and Python).

A box is (top, left, height, width) in integer pixels of the image it is drawn on.  Random boxes
come from the counter-based RNG (fastdata.rng) keyed by (seed, epoch, sample index, OP_CROP), so
they do not depend on threads or on the order in which samples are processed.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..rng import make_key, uniform

RRC_ATTEMPTS = 10


@njit(cache=True, nogil=True)
def random_resized_crop_box(key: np.uint64, height: int, width: int, scale_min: float,
                            scale_max: float, log_ratio_min: float, log_ratio_max: float
                            ) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params, draw for draw, on the counter-based RNG.

    Ten tries of area ~ U(scale) x image area and log aspect ~ U(log ratio); the first box that
    fits is placed uniformly.  Otherwise the central crop with the ratio clamped to the range."""
    area = float(height * width)
    for attempt in range(RRC_ATTEMPTS):
        target_area = area * (scale_min + (scale_max - scale_min) * uniform(key, 4 * attempt))
        aspect = math.exp(log_ratio_min + (log_ratio_max - log_ratio_min)
                          * uniform(key, 4 * attempt + 1))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = min(int(uniform(key, 4 * attempt + 2) * (height - h + 1)), height - h)
            left = min(int(uniform(key, 4 * attempt + 3) * (width - w + 1)), width - w)
            return top, left, h, w
    in_ratio = width / height
    ratio_min, ratio_max = math.exp(log_ratio_min), math.exp(log_ratio_max)
    if in_ratio < ratio_min:
        w = width
        h = int(round(w / ratio_min))
    elif in_ratio > ratio_max:
        h = height
        w = int(round(h * ratio_max))
    else:
        w, h = width, height
    h = max(1, min(h, height))
    w = max(1, min(w, width))
    return (height - h) // 2, (width - w) // 2, h, w


@njit(cache=True, nogil=True)
def center_crop_box(height: int, width: int, ratio: float) -> tuple[int, int, int, int]:
    """FFCV's CenterCrop box: a centred square of side int(ratio * min(height, width))."""
    side = max(1, int(ratio * min(height, width)))
    return (height - side) // 2, (width - side) // 2, side, side


def torchvision_center_crop_boxes(heights: np.ndarray, widths: np.ndarray, resize_size: int,
                                  out_h: int, out_w: int) -> np.ndarray:
    """float64[n, 4] boxes (top, left, height, width) in source pixels of torchvision's
    ``Resize(resize_size)`` + ``CenterCrop((out_h, out_w))``: the window that CenterCrop cuts
    from the resized image, mapped back through the resize (so fractional in general).

    Resize: the shorter side becomes resize_size, the longer ``int(resize_size * long /
    short)``; CenterCrop: top ``int(round((new_h - out_h) / 2))`` (Python's round, half to
    even), likewise left.  A window larger than the resized image is cut to it."""
    heights = np.asarray(heights, dtype=np.int64)
    widths = np.asarray(widths, dtype=np.int64)
    short, long = np.minimum(heights, widths), np.maximum(heights, widths)
    new_long = (resize_size * long / short).astype(np.int64)    # int() truncates, as Python
    portrait = widths <= heights
    new_h = np.where(portrait, new_long, resize_size)
    new_w = np.where(portrait, resize_size, new_long)
    crop_h, crop_w = np.minimum(out_h, new_h), np.minimum(out_w, new_w)
    top = np.round((new_h - crop_h) / 2.0)      # numpy rounds half to even, as Python's round
    left = np.round((new_w - crop_w) / 2.0)
    sy, sx = heights / new_h, widths / new_w
    return np.stack([top * sy, left * sx, crop_h * sy, crop_w * sx], axis=1)


@njit(cache=True, nogil=True)
def random_resized_crop_boxes(seed: int, epoch: int, indices: np.ndarray, op: int,
                              heights: np.ndarray, widths: np.ndarray, scale_min: float,
                              scale_max: float, log_ratio_min: float, log_ratio_max: float,
                              out: np.ndarray) -> None:
    """Boxes for a batch: out[k] = (top, left, height, width) for sample indices[k], drawn from
    the stream (seed, epoch, sample, op); op is OP_CROP, offset per view for multi-view."""
    for k in range(len(indices)):
        key = make_key(seed, epoch, indices[k], op)
        box = random_resized_crop_box(key, heights[k], widths[k], scale_min, scale_max,
                                      log_ratio_min, log_ratio_max)
        out[k, 0], out[k, 1], out[k, 2], out[k, 3] = box
