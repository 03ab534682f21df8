"""The typed records an image decoder's sampler hands to its backend and to later ops.

One convention for boxes inside the code: (top, left, height, width) float64 in stored pixels
(``fastdata.pixels.boxes`` converts at the edges: timm's, ml-dr's and RoIAlign's boxes).
A batch's ``CropParams`` is drawn before any pixel is touched and kept in
``BatchContext.crops[field]``: the backend decodes from it, label ops pool over its boxes,
``return_params`` reports it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Optional

import numpy as np


@dataclass
class PastePlan:
    """Where a CutMix drawn before decoding sends pixels (see ``Mixup.before_decode``).

    order: int64[n], the order in which the backend decodes the batch positions (partners one
    after the other, so the rows they share are written while still in cache);
    paste_to: int64[n], the position whose output receives region ``boxes[k]`` of position k's
    output instead of k (-1: none); boxes: int64[n, 4] (y0, y1, x0, x1) in output pixels."""
    order: np.ndarray
    paste_to: np.ndarray
    boxes: np.ndarray

    @classmethod
    def none(cls, n: int) -> "PastePlan":
        """n positions decoded in order, pasting nothing."""
        return cls(np.arange(n, dtype=np.int64), np.full(n, -1, dtype=np.int64),
                   np.zeros((n, 4), dtype=np.int64))

    @classmethod
    def between(cls, paste_to: np.ndarray, boxes: np.ndarray) -> "PastePlan":
        """A CutMix between positions k and paste_to[k] (-1: none), boxes (y0, y1, x0, x1)."""
        n = len(paste_to)
        order = np.arange(n, dtype=np.int64)
        if n % 2 == 0 and np.array_equal(paste_to[paste_to >= 0],
                                         (n - 1 - order)[paste_to >= 0]):
            order = np.stack([order[:n // 2], order[::-1][:n // 2]], axis=1).reshape(-1)
        return cls(order, np.ascontiguousarray(paste_to, dtype=np.int64),
                   np.ascontiguousarray(boxes, dtype=np.int64))

    @property
    def active(self) -> bool:
        return bool((self.paste_to >= 0).any())


@dataclass
class CropView:
    """One view's crops of a batch: boxes float64[n, 4] (top, left, height, width) in stored
    pixels, flips uint8[n] (1: mirrored left-right), sizes and original_sizes int64[n, 2]
    (height, width as stored, and before max_resolution), output_size (height, width)."""
    boxes: np.ndarray
    flips: np.ndarray
    sizes: np.ndarray
    original_sizes: np.ndarray
    output_size: tuple[int, int]


@dataclass
class CropParams:
    """Every random decision of an image decoder for one batch of n samples and V views.

    boxes: float64[V, n, 4] (top, left, height, width) in stored pixels;
    flips: uint8[V, n], the drawn flip bits, whoever applies them;
    decoder_flips: uint8[V, n], the bits the backend applies while resizing (0 where a later
      RandomHorizontalFlip flips the tensor instead);
    sizes, original_sizes: int64[n, 2] (height, width) as stored and before max_resolution;
    output_sizes: per view, (height, width);
    view_opts: int64[V, 2] per view, the largest DCT scale-down allowed (1: none) and whether
      the filter reads only the box's pixels (see pixels.image_kernel);
    paste: the CutMix paste plan of view 0 (PastePlan.none when nothing is pasted);
    replay: what ReplayedCrop replays (its ReplayPlan), None for the samplers."""
    boxes: np.ndarray
    flips: np.ndarray
    decoder_flips: np.ndarray
    sizes: np.ndarray
    original_sizes: np.ndarray
    output_sizes: tuple
    view_opts: np.ndarray
    paste: PastePlan
    replay: Optional[Any] = field(default=None)

    @classmethod
    def single_view(cls, boxes: np.ndarray, flips: np.ndarray, sizes: np.ndarray,
                    original_sizes: np.ndarray, output_size: tuple[int, int],
                    view_opts: Optional[np.ndarray] = None) -> "CropParams":
        """One view's crops (boxes [n, 4], flips [n], applied by the backend), pasting nothing;
        view_opts default: no DCT scale-down limit, filter within the box."""
        boxes = np.ascontiguousarray(np.asarray(boxes, dtype=np.float64)[None])
        flips = np.ascontiguousarray(np.asarray(flips, dtype=np.uint8)[None])
        opts = np.array([[8, 1]], dtype=np.int64) if view_opts is None else view_opts
        return cls(boxes, flips, flips, np.asarray(sizes, dtype=np.int64),
                   np.asarray(original_sizes, dtype=np.int64), (tuple(output_size),), opts,
                   PastePlan.none(boxes.shape[1]))

    @property
    def views(self) -> int:
        return len(self.output_sizes)

    @property
    def output_size(self) -> tuple[int, int]:
        """View 0's output (height, width)."""
        return self.output_sizes[0]

    def view(self, v: int) -> CropView:
        """View v's crops."""
        return CropView(self.boxes[v], self.flips[v], self.sizes, self.original_sizes,
                        self.output_sizes[v])

    def take(self, start: int, stop: int) -> "CropParams":
        """The crops of positions start:stop (no paste plan: pastes cross positions)."""
        if self.paste.active:
            raise ValueError("cannot take a slice of crops that paste between positions")
        return replace(self, boxes=np.ascontiguousarray(self.boxes[:, start:stop]),
                       flips=np.ascontiguousarray(self.flips[:, start:stop]),
                       decoder_flips=np.ascontiguousarray(self.decoder_flips[:, start:stop]),
                       sizes=self.sizes[start:stop],
                       original_sizes=self.original_sizes[start:stop],
                       paste=PastePlan.none(stop - start), replay=None)

    def params_record(self) -> list[np.ndarray]:
        """Per view, float64[n, 9]: box (top, left, height, width) in stored pixels, the same
        box in original-image pixels (before max_resolution), flip bit."""
        sy, sx = (self.original_sizes / self.sizes).T
        scale = np.stack([sy, sx, sy, sx], axis=1)
        return [np.concatenate([boxes, boxes * scale, flips[:, None]], axis=1)
                for boxes, flips in zip(self.boxes.astype(np.float64), self.flips)]


__all__ = ["CropParams", "CropView", "PastePlan"]
