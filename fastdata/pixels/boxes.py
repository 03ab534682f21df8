"""Box conventions.  Inside fastdata a box is (top, left, height, width), float64, in pixels of
the image it is on (crop boxes in stored pixels: ``fastdata.ops.crops``).  At the edges other
conventions meet it, converted here:

- timm's CutMix boxes (and Mixup's records): (y0, y1, x0, x1), rows y0:y1 and columns x0:x1;
- ml-dr's stored CutMix boxes (ReinforcementField ``cutmix_box``): (r1, c1, r2, c2);
- RoIAlign's boxes (torchvision.ops.roi_align, ReLabel's pooling): (x1, y1, x2, y2).
"""
from __future__ import annotations

import numpy as np


def from_timm(boxes: np.ndarray) -> np.ndarray:
    """float64[n, 4] (top, left, height, width) from [n, 4] (y0, y1, x0, x1)."""
    y0, y1, x0, x1 = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).T
    return np.stack([y0, x0, y1 - y0, x1 - x0], axis=1)


def to_timm(boxes: np.ndarray) -> np.ndarray:
    """float64[n, 4] (y0, y1, x0, x1) from [n, 4] (top, left, height, width)."""
    top, left, height, width = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).T
    return np.stack([top, top + height, left, left + width], axis=1)


def from_corners(boxes: np.ndarray) -> np.ndarray:
    """float64[n, 4] (top, left, height, width) from ml-dr's [n, 4] (r1, c1, r2, c2)."""
    r1, c1, r2, c2 = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).T
    return np.stack([r1, c1, r2 - r1, c2 - c1], axis=1)


def to_roi(boxes: np.ndarray) -> np.ndarray:
    """float64[n, 4] RoIAlign (x1, y1, x2, y2) from [n, 4] (top, left, height, width)."""
    top, left, height, width = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).T
    return np.stack([left, top, left + width, top + height], axis=1)


__all__ = ["from_timm", "to_timm", "from_corners", "to_roi"]
