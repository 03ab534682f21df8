"""FFCV's per-image augmentations, with FFCV's arguments and arithmetic and fastdata's RNG:
Cutout, RandomTranslate, RandomBrightness, RandomContrast, RandomSaturation, and the random
resized crop of decoded images (FFCV's ``transforms.RandomResizedCrop``, which resamples with
the decoders' filter rather than FFCV's INTER_AREA).

FFCV runs these on the decoder's raw uint8 ``[B, H, W, C]`` arrays, before ``ToTensor``; here
they take the same place in a pipeline (``[decoder, Cutout(8), ToTensor(), ...]``), where the
batch is the decoder's ring slot seen as a CPU tensor, and work on it in place, as FFCV's do, in
Numba kernels.  ToTorchImage's channels-last view of that memory is accepted too.  On the GPU
they raise: move them before ``ToDevice`` (as FFCV requires).

Each random decision is drawn from the counter-based RNG keyed (seed, epoch, sample index,
op id + VIEW_STRIDE * view), draw ``k`` numbered by the ``K_*`` constants, before any pixel is
touched; so a batch is the same whatever ``num_workers`` and after a resume.  Given the same
draws, the pixels are those of FFCV's code run by numpy (``tests/test_ffcv_transforms.py`` runs
FFCV's own functions with its draws replaced by ours): numpy's float64 arithmetic, clipped, then
truncated to uint8 as ``astype`` truncates.

Two instances of one op in the same pipeline draw the same parameters (the key names the op's
kind, not its position).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from numba import njit

from ..pixels.resample import new_scratch, resize_crop_into
from ..rng import (OP_BRIGHTNESS, OP_CONTRAST, OP_CUTOUT, OP_RESIZED_CROP_OF_IMAGES,
                   OP_SATURATION, OP_TRANSLATE, VIEW_STRIDE, draws)
from .base import BatchContext, BatchOp
from .crop_params import random_resized_crop_boxes

K_APPLY = 0      # apply the colour op at all (u < p)
K_FACTOR = 1     # its enhancement factor
K_ROW = 0        # Cutout's top row / RandomTranslate's row shift
K_COL = 1        # Cutout's left column / RandomTranslate's column shift


def is_torch_image_view(batch: Any) -> bool:
    """Whether ``batch`` is ToTorchImage's [B, C, H, W] view of [B, H, W, C] memory."""
    return getattr(batch, "ndim", 0) == 4 and batch.shape[1] > 1 and batch.stride(1) == 1 \
        and batch.stride(3) != 1


def image_array(batch: Any, who: str) -> np.ndarray:
    """The ``[B, H, W, C]`` numpy view (no copy) of an image batch on the CPU: the decoder's
    layout, or ToTorchImage's channels-last ``[B, C, H, W]`` view of it.  Writes to the view
    change the batch."""
    import torch
    if isinstance(batch, torch.Tensor):
        if batch.device.type != "cpu":
            raise ValueError(f"{who} works on CPU images, as FFCV's does: put it before "
                             f"ToDevice (got a batch on {batch.device})")
        if is_torch_image_view(batch):
            batch = batch.permute(0, 2, 3, 1)      # the stored layout
        batch = batch.numpy()
    if not isinstance(batch, np.ndarray) or batch.ndim != 4:
        raise ValueError(f"{who} needs a [B, H, W, C] image batch, got "
                         f"{getattr(batch, 'shape', type(batch).__name__)}")
    return batch


def _fill_value(fill: Sequence[int], who: str) -> np.ndarray:
    values = np.asarray(fill, dtype=np.int64).reshape(-1)
    if values.size == 0 or values.min() < 0 or values.max() > 255:
        raise ValueError(f"{who}: fill must be values in [0, 255], one per channel, got {fill}")
    return values


def _channel_fill(fill: np.ndarray, channels: int, who: str) -> np.ndarray:
    if fill.size not in (1, channels):
        raise ValueError(f"{who}: fill has {fill.size} values for images with {channels} "
                         f"channels")
    return np.broadcast_to(fill, (channels,)).astype(np.uint8)


def _draw(ctx: BatchContext, op: int, k: int) -> np.ndarray:
    return draws(ctx.seed, ctx.epoch, np.ascontiguousarray(ctx.indices, dtype=np.int64),
                 op + VIEW_STRIDE * ctx.view, k)


# -- Cutout --------------------------------------------------------------------------------------

@njit(cache=True, nogil=True)
def _cutout(images, tops, lefts, size, fill):
    for i in range(images.shape[0]):
        for r in range(tops[i], tops[i] + size):
            for c in range(lefts[i], lefts[i] + size):
                for ch in range(images.shape[3]):
                    images[i, r, c, ch] = fill[ch]


class RawArrayOp(BatchOp):
    """An op FFCV runs on raw arrays (its pipeline state's JIT mode, ops.ffcv_operation)."""
    ffcv_jit_mode = True


class Cutout(RawArrayOp):
    """FFCV's Cutout (DeVries & Taylor 2017): fill a ``crop_size`` x ``crop_size`` square of
    each image with ``fill`` (one value per channel, 0-255), in place.  The square's top row is
    ``floor(u * (H - crop_size + 1))`` and its left column likewise, as FFCV's
    ``np.random.randint``; u keyed (seed, epoch, index, OP_CUTOUT), draws K_ROW and K_COL."""

    def __init__(self, crop_size: int, fill: Sequence[int] = (0, 0, 0)):
        if int(crop_size) != crop_size or crop_size < 1:
            raise ValueError(f"Cutout: crop_size must be a positive integer, got {crop_size}")
        self.crop_size = int(crop_size)
        self.fill = _fill_value(fill, "Cutout")

    def square_origins(self, ctx: BatchContext, height: int, width: int) -> np.ndarray:
        """int64[B, 2]: (top, left) of each image's square."""
        if self.crop_size > min(height, width):
            raise ValueError(f"Cutout: crop_size {self.crop_size} exceeds the {height}x{width} "
                             f"images")
        tops = np.floor(_draw(ctx, OP_CUTOUT, K_ROW) * (height - self.crop_size + 1))
        lefts = np.floor(_draw(ctx, OP_CUTOUT, K_COL) * (width - self.crop_size + 1))
        return np.stack([tops, lefts], axis=1).astype(np.int64)

    def __call__(self, batch: Any, ctx: BatchContext) -> Any:
        images = image_array(batch, "Cutout")
        origins = self.square_origins(ctx, images.shape[1], images.shape[2])
        _cutout(images, np.ascontiguousarray(origins[:, 0]), np.ascontiguousarray(origins[:, 1]),
                self.crop_size, _channel_fill(self.fill, images.shape[3], "Cutout"))
        return batch


# -- RandomTranslate -----------------------------------------------------------------------------

@njit(cache=True, nogil=True)
def _translate(images, rows, cols, pad, fill, scratch):
    # Rows seen flat ([H, W * C]) with explicit loops: about 3x faster than slice assignments.
    n, h, w, channels = images.shape
    span = w * channels
    flat = images.reshape(n, h, span)
    copy = scratch.reshape(h, span)
    for i in range(n):
        img = flat[i]
        for r in range(h):
            for k in range(span):
                copy[r, k] = img[r, k]
        # Output pixel (r, c) is padded pixel (r + rows[i], c + cols[i]): source (r + dy, c + dx).
        dy, dx = rows[i] - pad, cols[i] - pad
        c0, c1 = max(0, -dx), min(w, w - dx)        # output columns with a source column
        for r in range(h):
            row = img[r]
            sr = r + dy
            if sr < 0 or sr >= h or c0 >= c1:
                for k in range(span):
                    row[k] = fill[k % channels]
                continue
            for k in range(c0 * channels):
                row[k] = fill[k % channels]
            src, shift = copy[sr], dx * channels
            for k in range(c0 * channels, c1 * channels):
                row[k] = src[k + shift]
            for k in range(c1 * channels, span):
                row[k] = fill[k % channels]


class RandomTranslate(RawArrayOp):
    """FFCV's RandomTranslate: shift each image by up to ``padding`` pixels in each direction,
    ``fill`` (one value per channel, 0-255) where the shifted image leaves the frame, in place.
    As FFCV's, the image is placed in a frame padded by ``padding`` and an H x W window is taken
    at row offset ``floor(u * (2 * padding + 1))`` (column likewise); u keyed (seed, epoch,
    index, OP_TRANSLATE), draws K_ROW and K_COL."""

    def __init__(self, padding: int, fill: Sequence[int] = (0, 0, 0)):
        if int(padding) != padding or padding < 0:
            raise ValueError(f"RandomTranslate: padding must be an integer >= 0, got {padding}")
        self.padding = int(padding)
        self.fill = _fill_value(fill, "RandomTranslate")
        self._scratch = np.empty((0, 0, 0), dtype=np.uint8)

    def offsets(self, ctx: BatchContext) -> np.ndarray:
        """int64[B, 2]: each window's (row, column) in the padded frame, in [0, 2 * padding]."""
        span = 2 * self.padding + 1
        rows = np.floor(_draw(ctx, OP_TRANSLATE, K_ROW) * span)
        cols = np.floor(_draw(ctx, OP_TRANSLATE, K_COL) * span)
        return np.stack([rows, cols], axis=1).astype(np.int64)

    def __call__(self, batch: Any, ctx: BatchContext) -> Any:
        images = image_array(batch, "RandomTranslate")
        offsets = self.offsets(ctx)
        if self._scratch.shape != images.shape[1:] or self._scratch.dtype != images.dtype:
            self._scratch = np.empty(images.shape[1:], dtype=images.dtype)   # once per size
        work = np.ascontiguousarray(images)     # the batch itself, unless strided
        _translate(work, np.ascontiguousarray(offsets[:, 0]), np.ascontiguousarray(offsets[:, 1]),
                   self.padding, _channel_fill(self.fill, images.shape[3], "RandomTranslate"),
                   self._scratch)
        if work is not images:
            images[...] = work
        return batch


# -- colour --------------------------------------------------------------------------------------

BRIGHTNESS, CONTRAST, SATURATION = 0, 1, 2


@njit(cache=True, nogil=True)
def _blend_value(a, b, ratio):
    """FFCV's blend of one value: (ratio * a + (1 - ratio) * b) in float64, clipped to
    [0, 255], truncated to uint8."""
    v = ratio * a + (1.0 - ratio) * b
    if v < 0.0:
        v = 0.0
    elif v > 255.0:
        v = 255.0
    return np.uint8(v)


@njit(cache=True, nogil=True)
def _gray(img, r, c):
    """FFCV's grey level of one pixel, truncated to uint8 as its ``astype`` does."""
    return np.uint8(0.2989 * np.float64(img[r, c, 0]) + 0.587 * np.float64(img[r, c, 1])
                    + 0.114 * np.float64(img[r, c, 2]))


@njit(cache=True, nogil=True)
def _adjust(images, apply, factors, kind):
    h, w, channels = images.shape[1], images.shape[2], images.shape[3]
    for i in range(images.shape[0]):
        if not apply[i]:
            continue
        img = images[i]
        ratio = factors[i]
        if kind == BRIGHTNESS:
            for r in range(h):
                for c in range(w):
                    for ch in range(channels):
                        img[r, c, ch] = _blend_value(np.float64(img[r, c, ch]), 0.0, ratio)
        elif kind == CONTRAST:
            total = 0.0     # a sum of integers: exact, in any order
            for r in range(h):
                for c in range(w):
                    total += np.float64(_gray(img, r, c))
            mean = total / (h * w)
            for r in range(h):
                for c in range(w):
                    for ch in range(channels):
                        img[r, c, ch] = _blend_value(np.float64(img[r, c, ch]), mean, ratio)
        else:
            for r in range(h):
                for c in range(w):
                    g = np.float64(_gray(img, r, c))
                    for ch in range(channels):
                        img[r, c, ch] = _blend_value(np.float64(img[r, c, ch]), g, ratio)


class _ColorOp(RawArrayOp):
    _op = -1
    _kind = -1

    def __init__(self, magnitude: float, p: float = 0.5):
        name = type(self).__name__
        if not magnitude >= 0:
            raise ValueError(f"{name}: magnitude must be >= 0, got {magnitude}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name}: p must be in [0, 1], got {p}")
        self.magnitude, self.p = float(magnitude), float(p)

    def factors(self, ctx: BatchContext) -> tuple[np.ndarray, np.ndarray]:
        """(bool[B] applied, float64[B] factor), the factor uniform on
        [max(0, 1 - magnitude), 1 + magnitude) (numpy's ``low + (high - low) * u``)."""
        apply = _draw(ctx, self._op, K_APPLY) < self.p
        low, high = max(0.0, 1.0 - self.magnitude), 1.0 + self.magnitude
        return apply, low + (high - low) * _draw(ctx, self._op, K_FACTOR)

    def __call__(self, batch: Any, ctx: BatchContext) -> Any:
        name = type(self).__name__
        images = image_array(batch, name)
        if images.dtype != np.uint8:
            raise ValueError(f"{name} needs uint8 images, got {images.dtype}")
        if self._kind != BRIGHTNESS and images.shape[3] != 3:
            raise ValueError(f"{name} needs RGB images, got {images.shape[3]} channels")
        apply, factors = self.factors(ctx)
        _adjust(images, apply, factors, self._kind)
        return batch


class RandomBrightness(_ColorOp):
    """FFCV's RandomBrightness: with probability ``p``, scale each pixel by a factor uniform on
    [max(0, 1 - magnitude), 1 + magnitude], clipped to [0, 255] and truncated, in place.  Draws
    keyed (seed, epoch, index, OP_BRIGHTNESS): K_APPLY, K_FACTOR."""
    _op, _kind = OP_BRIGHTNESS, BRIGHTNESS


class RandomContrast(_ColorOp):
    """FFCV's RandomContrast: with probability ``p``, blend each image with the mean of its
    grey levels (0.2989 R + 0.587 G + 0.114 B, truncated) by a factor uniform on
    [max(0, 1 - magnitude), 1 + magnitude], in place.  Draws keyed (seed, epoch, index,
    OP_CONTRAST): K_APPLY, K_FACTOR."""
    _op, _kind = OP_CONTRAST, CONTRAST


class RandomSaturation(_ColorOp):
    """FFCV's RandomSaturation: with probability ``p``, blend each pixel with its grey level
    (as RandomContrast's) by a factor uniform on [max(0, 1 - magnitude), 1 + magnitude], in
    place.  Draws keyed (seed, epoch, index, OP_SATURATION): K_APPLY, K_FACTOR."""
    _op, _kind = OP_SATURATION, SATURATION


# -- RandomResizedCrop of decoded images ---------------------------------------------------------

@njit(cache=True, nogil=True)
def _resized_crops(images, boxes, out, scratch):
    for k in range(images.shape[0]):
        resize_crop_into(images[k], boxes[k, 0], boxes[k, 1], boxes[k, 2], boxes[k, 3], out[k],
                         False, scratch, True)


class RandomResizedCropOfImages(RawArrayOp):
    """FFCV's ``transforms.RandomResizedCrop(scale, ratio, size)``: a random resized crop of
    images already decoded (e.g. by SimpleRGBImageDecoder), uint8 ``[B, H, W, 3]`` ->
    ``[B, size, size, 3]``.  The crop-while-decoding RandomResizedCrop decoder is the fast way;
    this is for pipelines written around FFCV's transform.  Boxes are torchvision's
    ``RandomResizedCrop.get_params`` algorithm keyed (seed, epoch, index,
    OP_RESIZED_CROP_OF_IMAGES); the resize is the decoders' antialiased bilinear filter within
    the box (torchvision's ``resized_crop``), where FFCV uses OpenCV's INTER_AREA.  Outputs go
    to per-slot buffers, reused."""

    def __init__(self, scale: Sequence[float], ratio: Sequence[float], size: int):
        if not 0 < scale[0] <= scale[1]:
            raise ValueError(f"RandomResizedCrop: scale must be an increasing pair > 0, got "
                             f"{scale}")
        if not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"RandomResizedCrop: ratio must be an increasing pair > 0, got "
                             f"{ratio}")
        if int(size) != size or size < 1:
            raise ValueError(f"RandomResizedCrop: size must be a positive integer, got {size}")
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.size = int(size)
        self._outputs: dict[int, np.ndarray] = {}

    def setup(self, ring_size: int) -> None:
        self._outputs = {}

    def boxes(self, ctx: BatchContext, height: int, width: int) -> np.ndarray:
        """float64[B, 4]: each image's (top, left, height, width)."""
        n = len(ctx.indices)
        out = np.empty((n, 4), dtype=np.float64)
        random_resized_crop_boxes(ctx.seed, ctx.epoch,
                                  np.ascontiguousarray(ctx.indices, dtype=np.int64),
                                  OP_RESIZED_CROP_OF_IMAGES + VIEW_STRIDE * ctx.view,
                                  np.full(n, height, np.int64), np.full(n, width, np.int64),
                                  self.scale[0], self.scale[1], math.log(self.ratio[0]),
                                  math.log(self.ratio[1]), out)
        return out

    def __call__(self, batch: Any, ctx: BatchContext) -> np.ndarray:
        images = image_array(batch, "RandomResizedCrop")
        if images.dtype != np.uint8 or images.shape[3] != 3:
            raise ValueError(f"RandomResizedCrop needs uint8 [B, H, W, 3] images, got "
                             f"{images.dtype} {images.shape}")
        n, height, width = images.shape[:3]
        out = self._outputs.get(ctx.slot)
        if out is None or len(out) < n:
            out = self._outputs[ctx.slot] = np.empty((n, self.size, self.size, 3), np.uint8)
        out = out[:n]
        boxes = self.boxes(ctx, height, width)
        _resized_crops(np.ascontiguousarray(images), boxes, out,
                       new_scratch(self.size, self.size, height, width))
        return out
