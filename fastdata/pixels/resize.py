"""Downscaling to a maximum side, with FFCV's exact size rule and filter."""
from __future__ import annotations

from typing import Optional

import cv2
import numpy as np


def size_within(width: int, height: int, max_side: Optional[int]) -> tuple[int, int]:
    """(width, height) after capping the longest side at ``max_side`` (never upscaled).

    FFCV's rule: ratio = max_side / max(w, h); when ratio < 1 each side becomes int(ratio * side).
    Unlike FFCV, a side never drops to 0 (a 1 x 2000 strip stays 1 pixel wide)."""
    if not max_side or max(width, height) <= max_side:
        return width, height
    ratio = max_side / max(width, height)
    return max(1, int(ratio * width)), max(1, int(ratio * height))


def resize_area(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize H x W x C uint8 to ``height`` x ``width`` with OpenCV's INTER_AREA (as FFCV)."""
    if rgb.shape[1] == width and rgb.shape[0] == height:
        return rgb
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
