"""Image decoders: crop box and flip drawn first, then decode only what the crop needs, resize
with an anti-aliased filter, and flip while writing.

Per sample, in a Numba kernel holding no GIL (fastdata.ops.image_kernel):

1. the box (top, left, height, width) in stored pixels comes from the counter-based RNG
   (RandomResizedCrop) or from the image size (CenterCrop, full image);
2. a JPEG is decoded at the smallest DCT scale (1/8, 1/4, 1/2, 1) whose result still has at least
   the output's size, and only over the rows and columns of the box (libjpeg-turbo 3's region
   decoding); a raw image is read in place from the file;
3. the box is resized to the output size with torchvision's anti-aliased bilinear filter
   (``antialias=True``), mirrored when the flip bit is set.

Boxes and flip bits stay in the batch's params, where later ops (label pooling) read them, and
``params_record`` reports them in stored and in original-image pixels.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np

from .. import jpeg, libturbojpeg
from ..fields import RGBImageField
from ..fields.rgb_image import MODE_JPG
from ..reader import SampleError
from ..rng import OP_CROP, OP_FLIP, draws
from .base import BatchContext, BatchOp, Decoder, check_range
from .crop_params import center_crop_box, random_resized_crop_boxes
from .image_kernel import (STATUS_ERROR, STATUS_MISMATCH, STATUS_NEEDS_PYTHON, decode_kernel,
                           resize_decoded)
from .resample import scratch_size

DEFAULT_CROP_RATIO = 224 / 256
_EMPTY = np.zeros(4, dtype=np.int64)      # an empty paste region


class RandomHorizontalFlip(BatchOp):
    """Mirror each image left-right with probability ``p``.  Directly after an image decoder it
    is folded into the decoder (the resize writes mirrored rows, no extra pass); elsewhere it
    flips the batch tensor.  Either way the bit comes from the counter-based RNG, so the two
    placements flip the same samples."""

    def __init__(self, p: float = 0.5):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"flip probability must be in [0, 1], got {p}")
        self.p = float(p)

    def __call__(self, batch: Any, ctx: BatchContext) -> Any:
        import torch
        bits = draws(ctx.seed, ctx.epoch, ctx.indices, OP_FLIP, 0) < self.p
        record = ctx.params.get(getattr(self, "pipeline", None))
        if record is not None:          # label ops read the flips from the image's params
            record["flips"] = record["all_flips"][0] = bits.astype(np.uint8)
        flips = torch.from_numpy(bits)
        if batch.dim() != 4:
            raise ValueError(f"RandomHorizontalFlip needs an image batch, got {tuple(batch.shape)}")
        width_dim = 3 if batch.shape[1] in (1, 3) and batch.shape[3] not in (1, 3) else 2
        flips = flips.to(batch.device).view(-1, 1, 1, 1)
        return torch.where(flips, batch.flip(width_dim), batch)


VIEW_STRIDE = 16   # RNG op ids of view v: OP_CROP + 16 v, OP_FLIP + 16 v (view 0: the plain ids)


def no_paste(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The kernel's (order, paste_to, paste_boxes) for n positions decoded in order that paste
    nothing."""
    return (np.arange(n, dtype=np.int64), np.full(n, -1, dtype=np.int64),
            np.zeros((n, 4), dtype=np.int64))


def paste_plan(paste_to: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                  np.ndarray]:
    """(order, paste_to, paste_boxes) for a CutMix between positions k and paste_to[k]: partners
    are decoded one after the other, by the same worker, so the rows they share are written
    while still in its cache (decoded far apart, each costs a second trip to memory)."""
    n = len(paste_to)
    order = np.arange(n, dtype=np.int64)
    if n % 2 == 0 and np.array_equal(paste_to[paste_to >= 0],
                                     (n - 1 - order)[paste_to >= 0]):
        order = np.stack([order[:n // 2], order[::-1][:n // 2]], axis=1).reshape(-1)
    return order, np.ascontiguousarray(paste_to, dtype=np.int64), \
        np.ascontiguousarray(boxes, dtype=np.int64)


class ImageDecoder(Decoder):
    """Base of the image decoders: output ``output_size`` (height, width) uint8 RGB."""

    parallel = True
    #: decode_range honours ``ctx.pastes`` (a CutMix drawn before decoding, see Mixup).
    supports_paste = True

    def __init__(self, output_size: Optional[Sequence[int]] = None):
        self.output_size = None if output_size is None else _pair(output_size)
        self.flip_p = 0.0
        self.view = 0

    @property
    def views(self) -> list["ImageDecoder"]:
        """The decoders whose outputs this one produces (itself, or MultiView's views)."""
        return [self]

    def absorb(self, ops: list) -> list:
        """Fold a RandomHorizontalFlip that directly follows into the decoding kernel."""
        if ops and isinstance(ops[0], RandomHorizontalFlip):
            for view in self.views:
                view.flip_p = ops[0].p
            return ops[1:]
        return ops

    field_types = (RGBImageField,)

    def bind(self, reader, name: str, field_index: int) -> None:
        super().bind(reader, name, field_index)
        column = self.column
        self.modes = np.ascontiguousarray(column["mode"]).astype(np.uint8)
        self.widths = np.ascontiguousarray(column["width"]).astype(np.int64)
        self.heights = np.ascontiguousarray(column["height"]).astype(np.int64)
        self.ptrs = reader.payload_ptrs(name).astype(np.int64)
        self.sizes = reader.payload_sizes(name).astype(np.int64)
        table = reader.side_table(name)
        self.orig_widths = self.widths if table is None else table["width"].astype(np.int64)
        self.orig_heights = self.heights if table is None else table["height"].astype(np.int64)
        jpg = self.modes == MODE_JPG
        self.max_jpeg_pixels = int((self.widths * self.heights)[jpg].max(initial=0))
        self.max_height = int(self.heights.max(initial=1))
        self.max_width = int(self.widths.max(initial=1))

    def sample_shape(self, batch_size: int):
        """(shape, dtype), or a list of them for several views."""
        shapes = [((*view.output_size, 3), np.uint8) for view in self.views]
        return shapes[0] if len(shapes) == 1 else shapes

    def boxes(self, ctx: BatchContext, heights: np.ndarray, widths: np.ndarray) -> np.ndarray:
        """int64[n, 4] boxes (top, left, height, width) in stored pixels."""
        raise NotImplementedError

    def prepare(self, ctx: BatchContext, out: Any) -> None:
        idx = ctx.indices
        heights, widths = self.heights[idx], self.widths[idx]
        sizes = np.stack([heights, widths], axis=1)
        original = np.stack([self.orig_heights[idx], self.orig_widths[idx]], axis=1)
        records = []
        for view in self.views:
            flips = np.zeros(len(idx), dtype=np.uint8)
            if view.flip_p > 0:
                flips[:] = draws(ctx.seed, ctx.epoch, idx, OP_FLIP + VIEW_STRIDE * view.view,
                                 0) < view.flip_p
            records.append({"boxes": view.boxes(ctx, heights, widths), "flips": flips,
                            "sizes": sizes, "original_sizes": original,
                            "output_size": view.output_size})
        params = dict(records[0])
        if len(records) > 1:
            params["views"] = records
        # The kernel's arrays: boxes [views, n, 4] and flips [views, n].
        params["all_boxes"] = np.stack([r["boxes"] for r in records])
        params["all_flips"] = np.stack([r["flips"] for r in records])
        paste = ctx.pastes.get(self.name)
        if paste is not None and (len(records) > 1 or not self.supports_paste):
            raise RuntimeError(f"{type(self).__name__} for {self.name!r} cannot paste while "
                               f"decoding")
        params["paste"] = paste_plan(*paste) if paste is not None else no_paste(len(idx))
        ctx.params[self.name] = params

    def make_worker_state(self) -> dict:
        scratch = max(scratch_size(*view.output_size, self.max_height, self.max_width)
                      for view in self.views)
        return {
            "region": np.empty(max(self.max_jpeg_pixels * 3, 3), dtype=np.uint8),
            "scratch": np.empty(scratch, dtype=np.float32),
            "handle": libturbojpeg.new_handle() if libturbojpeg.AVAILABLE else 0,
            "status": np.zeros(self.batch_size, dtype=np.int64),
        }

    def release_worker_state(self, state: dict) -> None:
        if state["handle"]:
            libturbojpeg.free_handle(state["handle"])
            state["handle"] = 0

    def decode_range(self, ctx: BatchContext, start: int, stop: int, out: Any,
                     worker: dict) -> None:
        params = ctx.params[self.name]
        outs = tuple(out) if isinstance(out, (tuple, list)) else (out,)
        status = worker["status"]
        order, paste_to, paste_boxes = params["paste"]
        decode_kernel()(self.reader.data, self.modes, self.ptrs, self.sizes, self.widths,
                     self.heights, ctx.indices, order, params["all_boxes"], params["all_flips"],
                     start, stop, outs, paste_to, paste_boxes, worker["region"],
                     worker["scratch"], worker["handle"], libturbojpeg.AVAILABLE, status)
        for k in order[start:stop]:
            if status[k] == STATUS_NEEDS_PYTHON:
                self._decode_in_python(ctx, k, outs, worker)
            elif status[k] in (STATUS_ERROR, STATUS_MISMATCH):
                index = int(ctx.indices[k])
                reason = (libturbojpeg.error_string(worker["handle"]) if status[k] == STATUS_ERROR
                          else "stored JPEG's size differs from its record")
                raise SampleError(index, self.name, f"cannot decode JPEG: {reason}")

    def _decode_in_python(self, ctx: BatchContext, k: int, outs: tuple, worker: dict) -> None:
        """Fallback without libturbojpeg 3: simplejpeg (GIL released) at the DCT scale, full
        image, then the same resize kernel."""
        index = int(ctx.indices[k])
        params = ctx.params[self.name]
        boxes, flips = params["all_boxes"][:, k], params["all_flips"][:, k]
        denom = min(_dct_denominator(int(box[2]), int(box[3]), out.shape[1], out.shape[2])
                    for box, out in zip(boxes, outs))
        rgb, scale_y, scale_x = self.decode_jpeg_python(index, denom)
        _, paste_to, paste_boxes = params["paste"]
        for v, (box, flip, out) in enumerate(zip(boxes, flips, outs)):
            j = int(paste_to[k]) if v == 0 else -1
            resize_decoded(rgb, box[0] * scale_y, box[1] * scale_x, box[2] * scale_y,
                           box[3] * scale_x, out[k], bool(flip), worker["scratch"],
                           out[j] if j >= 0 else out[k], paste_boxes[k] if j >= 0 else _EMPTY)

    def decode_jpeg_python(self, index: int, denom: int) -> tuple[np.ndarray, float, float]:
        """Sample ``index``'s whole JPEG decoded by simplejpeg (GIL released) at about 1/denom
        scale, and that scale (height, width) relative to the stored image."""
        ptr, size = int(self.ptrs[index]), int(self.sizes[index])
        try:
            rgb = jpeg.simplejpeg.decode_jpeg(
                self.reader.data[ptr:ptr + size], colorspace="RGB",
                min_height=-(-int(self.heights[index]) // denom),
                min_width=-(-int(self.widths[index]) // denom))
        except (ValueError, RuntimeError) as err:
            raise SampleError(index, self.name, f"cannot decode JPEG: {err}") from None
        return rgb, rgb.shape[0] / self.heights[index], rgb.shape[1] / self.widths[index]

    def params_record(self, ctx: BatchContext) -> list[np.ndarray]:
        """Per view, float64[n, 9]: box (top, left, height, width) in stored pixels, the same
        box in original-image pixels (before max_resolution), flip bit."""
        params = ctx.params[self.name]
        sy, sx = (params["original_sizes"] / params["sizes"]).T
        scale = np.stack([sy, sx, sy, sx], axis=1)
        out = []
        for boxes, flips in zip(params["all_boxes"], params["all_flips"]):
            boxes = boxes.astype(np.float64)
            out.append(np.concatenate([boxes, boxes * scale, flips[:, None]], axis=1))
        return out


def _pair(size: Any) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        size = (size, size)
    h, w = (int(s) for s in size)
    if h <= 0 or w <= 0:
        raise ValueError(f"output size must be positive, got {size}")
    return h, w


def _dct_denominator(box_h: int, box_w: int, out_h: int, out_w: int) -> int:
    for denom in (8, 4, 2):
        if box_h // denom >= out_h and box_w // denom >= out_w:
            return denom
    return 1


class SimpleRGBImageDecoder(ImageDecoder):
    """Whole images, unresized: every image of the file must have the same size (as FFCV)."""

    def __init__(self):
        super().__init__(None)

    def bind(self, reader, name, field_index):
        super().bind(reader, name, field_index)
        if len(self.heights) and (np.any(self.heights != self.heights[0])
                                  or np.any(self.widths != self.widths[0])):
            raise TypeError(f"SimpleRGBImageDecoder needs images of one size; field {name!r} "
                            f"has several: use RandomResizedCrop or CenterCrop")
        self.output_size = (int(self.heights[0]), int(self.widths[0])) if len(self.heights) \
            else (1, 1)

    def boxes(self, ctx, heights, widths):
        n = len(heights)
        return np.stack([np.zeros(n, np.int64), np.zeros(n, np.int64), heights, widths], axis=1)


class RandomResizedCrop(ImageDecoder):
    """torchvision's RandomResizedCrop(size, scale, ratio) with antialias=True: a box of area
    ~U(scale) of the image and log aspect ratio ~U(log ratio) (ten tries, then the central
    fallback), resized to ``output_size`` (int or (height, width))."""

    def __init__(self, output_size: Any, scale: Sequence[float] = (0.08, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3)):
        super().__init__(output_size)
        self.scale = check_range("scale", scale)
        self.ratio = check_range("ratio", ratio)
        if self.ratio[0] <= 0:
            raise ValueError(f"ratio must be positive, got {ratio}")

    def boxes(self, ctx, heights, widths):
        out = np.empty((len(heights), 4), dtype=np.int64)
        random_resized_crop_boxes(ctx.seed, ctx.epoch, ctx.indices,
                                  OP_CROP + VIEW_STRIDE * self.view, heights, widths,
                                  self.scale[0], self.scale[1], math.log(self.ratio[0]),
                                  math.log(self.ratio[1]), out)
        return out


class CenterCrop(ImageDecoder):
    """FFCV's CenterCropRGBImageDecoder: the centred square of side ``ratio`` x the shorter
    side, resized to ``output_size`` (ratio 224/256 is torchvision's Resize(256) +
    CenterCrop(224))."""

    def __init__(self, output_size: Any, ratio: float = DEFAULT_CROP_RATIO):
        super().__init__(output_size)
        if not 0 < ratio <= 1:
            raise ValueError(f"ratio must be in (0, 1], got {ratio}")
        self.ratio = float(ratio)

    def boxes(self, ctx, heights, widths):
        return np.array([center_crop_box(int(h), int(w), self.ratio)
                         for h, w in zip(heights, widths)], dtype=np.int64).reshape(-1, 4)


class MultiView(ImageDecoder):
    """Several independently augmented views of each image, decoding its JPEG once.

    ``MultiView(RandomResizedCrop(224), RandomResizedCrop(224))`` gives BYOL/SimCLR's two views;
    ``MultiView(RandomResizedCrop(224, scale=(0.4, 1)), *[RandomResizedCrop(96,
    scale=(0.05, 0.4))] * 6)`` gives DINO-style global and local crops (repeating one decoder
    object is fine: each position is a view with its own parameters).  Each view draws its own
    box and flip bit; the pipeline yields one output per view.  A RandomHorizontalFlip right
    after MultiView flips every view independently."""

    def __init__(self, *views: ImageDecoder):
        if not views:
            raise ValueError("MultiView needs at least one view")
        copies = []
        for v, view in enumerate(views):
            if not isinstance(view, ImageDecoder) or isinstance(view, (MultiView,
                                                                       SimpleRGBImageDecoder)):
                raise TypeError(f"view {v}: {view!r} is not a cropping image decoder")
            copy = object.__new__(type(view))
            copy.__dict__.update(view.__dict__)
            copy.view = v
            copies.append(copy)
        super().__init__(None)
        self._views = copies

    @property
    def views(self) -> list[ImageDecoder]:
        return self._views


# FFCV's names, so that switching is a change of imports.
RandomResizedCropRGBImageDecoder = RandomResizedCrop
CenterCropRGBImageDecoder = CenterCrop
__all__ = ["ImageDecoder", "SimpleRGBImageDecoder", "RandomResizedCrop", "CenterCrop", "MultiView",
           "RandomHorizontalFlip", "RandomResizedCropRGBImageDecoder", "CenterCropRGBImageDecoder"]
