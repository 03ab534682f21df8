"""Image decoders: crop box and flip drawn first, then decode only what the crop needs, resize
with an anti-aliased filter, and flip while writing.

Per sample, in a Numba kernel holding no GIL (fastdata.ops.image_kernel):

1. the box (top, left, height, width) in stored pixels comes from the counter-based RNG
   (RandomResizedCrop) or from the image size (CenterCrop, full image);
2. a JPEG is decoded at the smallest DCT scale (1/8, 1/4, 1/2, 1) whose result still has at least
   the output's size (``dct_scaling=False``: always at full scale), and only over the rows and
   columns of the box (libjpeg-turbo 3's region decoding); a raw image is read in place from
   the file;
3. the box is resized to the output size with torchvision's anti-aliased bilinear filter
   (``antialias=True``), mirrored when the flip bit is set.  The crop ops' filter reads only
   the box's pixels, as torchvision's crop-then-resize.

Corrupt JPEG data is an error (``SampleError`` with the sample index and field) by default:
a record that does not end with the end-of-image marker, a zeroed quantisation table, and data
that libjpeg decodes only with a warning (see jpeg.decode_record).  ``accept_jpeg_warnings=True``
accepts what libjpeg can decode, as FFCV does.

Boxes and flip bits stay in the batch's params, where later ops (label pooling) read them, and
``params_record`` reports them in stored and in original-image pixels.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..pixels import jpeg, libturbojpeg
from ..pixels.jpeg import JpegError
from ..fields import RGBImageField
from ..fields.rgb_image import MODE_JPG
from ..reader import SampleError
from ..rng import OP_CROP, OP_FLIP, draws
from .base import BatchContext, BatchOp, Decoder, check_range
from .crop_params import (center_crop_box, random_resized_crop_boxes,
                          torchvision_center_crop_boxes)
from ..pixels.image_kernel import (OPT_MAX_DENOM, OPT_WITHIN_BOX, STATUS_ERROR, STATUS_MISMATCH,
                           STATUS_NEEDS_PYTHON, STATUS_NO_EOI, STATUS_WARNING, STATUS_ZERO_QUANT,
                           dct_denominator,
                           decode_kernel, resize_decoded)
from ..pixels.resample import scratch_size

DEFAULT_CROP_RATIO = 224 / 256
_EMPTY = np.zeros(4, dtype=np.int64)      # an empty paste region
_REASONS = {STATUS_MISMATCH: "stored JPEG's size differs from its record",
            STATUS_NO_EOI: jpeg.NO_EOI, STATUS_ZERO_QUANT: jpeg.ZERO_QUANT}
_FAILED = (STATUS_ERROR, *_REASONS)


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
    """Base of the image decoders: output ``output_size`` (height, width) uint8 RGB.

    dct_scaling: decode a JPEG at 1/2, 1/4 or 1/8 scale when the box is that many times larger
    than the output (faster; the README gives what it costs in pixels).  False: always decode
    at full scale, then resize.
    accept_jpeg_warnings: accept JPEG data that libjpeg decodes only with a warning (corrupt or
    truncated data, decoded as best it can), as FFCV does; False (default) raises
    ``SampleError``.
    use_libturbojpeg: region decoding with libjpeg-turbo 3 where it is installed (default);
    False decodes JPEGs with simplejpeg (whole image at the DCT scale, then the same resize)."""

    parallel = True
    #: decode_range honours ``ctx.pastes`` (a CutMix drawn before decoding, see Mixup).
    supports_paste = True
    #: the filter reads only the box's pixels (torchvision's crop-then-resize)
    within_box = True

    def __init__(self, output_size: Optional[Sequence[int]] = None, dct_scaling: bool = True,
                 accept_jpeg_warnings: bool = False, use_libturbojpeg: bool = True):
        self.output_size = None if output_size is None else _pair(output_size)
        self.dct_scaling = bool(dct_scaling)
        self.accept_jpeg_warnings = bool(accept_jpeg_warnings)
        self.use_libturbojpeg = bool(use_libturbojpeg)
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
        """float64[n, 4] boxes (top, left, height, width) in stored pixels."""
        raise NotImplementedError

    def view_options(self) -> np.ndarray:
        """The kernel's int64[views, 2] view_opts: largest DCT scale-down, filter within box."""
        opts = np.zeros((len(self.views), 2), dtype=np.int64)
        for v, view in enumerate(self.views):
            opts[v, OPT_MAX_DENOM] = 8 if view.dct_scaling else 1
            opts[v, OPT_WITHIN_BOX] = int(view.within_box)
        return opts

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
            boxes = np.ascontiguousarray(view.boxes(ctx, heights, widths), dtype=np.float64)
            records.append({"boxes": boxes, "flips": flips,
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
        params["view_opts"] = self.view_options()
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
        order, paste_to, paste_boxes = params["paste"]
        status = worker["status"]
        self.run_kernel(ctx.indices, order, params["all_boxes"], params["all_flips"],
                        params["view_opts"], start, stop, outs, paste_to, paste_boxes, worker,
                        status)
        for k in order[start:stop]:
            if status[k] == STATUS_NEEDS_PYTHON:
                self._decode_in_python(ctx, k, outs, worker)

    def run_kernel(self, indices: np.ndarray, order: np.ndarray, boxes: np.ndarray,
                   flips: np.ndarray, view_opts: np.ndarray, start: int, stop: int,
                   outs: tuple, paste_to: np.ndarray, paste_boxes: np.ndarray, worker: dict,
                   status: np.ndarray,
                   describe: Optional[Callable[[int], str]] = None) -> None:
        """The decoding kernel over positions order[start:stop] (see image_kernel.decode_range),
        then the error rule: a failed sample raises SampleError; JPEGs it leaves to Python
        get STATUS_NEEDS_PYTHON in ``status``.  ``describe(k)`` adds to position k's error
        message (e.g. " (mixing partner of sample 12)")."""
        use_turbo = self.use_libturbojpeg and libturbojpeg.AVAILABLE
        decode_kernel(use_turbo)(self.reader.data, self.modes, self.ptrs, self.sizes,
                                 self.widths, self.heights, indices, order, boxes, flips,
                                 view_opts, start, stop, outs, paste_to, paste_boxes,
                                 worker["region"], worker["scratch"], worker["handle"],
                                 use_turbo, not self.accept_jpeg_warnings, status)
        for k in order[start:stop]:
            code = status[k]
            if code in _FAILED or (code == STATUS_WARNING and not self.accept_jpeg_warnings):
                role = describe(int(k)) if describe is not None else ""
                index = int(indices[k])
                raise SampleError(index, self.name, f"cannot decode JPEG{role}: "
                                  f"{self._failure_reason(index, code, worker['handle'])}")

    def _failure_reason(self, index: int, code: int, handle: int) -> str:
        """Why the kernel failed sample ``index``: decoding it again with simplejpeg gives the
        message of its first error or warning (the handle's own message may already belong to
        a later sample of the range)."""
        if code in _REASONS:
            return _REASONS[code]
        try:
            jpeg.decode_record(self.payload(index))
        except JpegError as err:
            return str(err)
        return libturbojpeg.error_string(handle)

    def payload(self, index: int) -> np.ndarray:
        """Sample ``index``'s stored bytes (a view into the file)."""
        ptr, size = int(self.ptrs[index]), int(self.sizes[index])
        return self.reader.data[ptr:ptr + size]

    def _decode_in_python(self, ctx: BatchContext, k: int, outs: tuple, worker: dict) -> None:
        """Without libturbojpeg 3: simplejpeg (GIL released) decodes the whole JPEG at the DCT
        scale, then the same resize as the kernel, on the same pixels the region decoder
        would have produced (the box divided by the scale's denominator)."""
        index = int(ctx.indices[k])
        params = ctx.params[self.name]
        boxes, flips = params["all_boxes"][:, k], params["all_flips"][:, k]
        opts = params["view_opts"]
        denom = min(dct_denominator(box[2], box[3], out.shape[1], out.shape[2],
                                    int(opt[OPT_MAX_DENOM]))
                    for box, out, opt in zip(boxes, outs, opts))
        rgb = self.decode_jpeg_python(index, denom)
        _, paste_to, paste_boxes = params["paste"]
        for v, (box, flip, out, opt) in enumerate(zip(boxes, flips, outs, opts)):
            j = int(paste_to[k]) if v == 0 else -1
            resize_decoded(rgb, box[0] / denom, box[1] / denom, box[2] / denom, box[3] / denom,
                           out[k], bool(flip), worker["scratch"], out[j] if j >= 0 else out[k],
                           paste_boxes[k] if j >= 0 else _EMPTY, bool(opt[OPT_WITHIN_BOX]))

    def decode_jpeg_python(self, index: int, denom: int) -> np.ndarray:
        """Sample ``index``'s whole JPEG decoded by simplejpeg (GIL released) at exactly 1/denom
        scale (each side ceil(side / denom), as libjpeg's DCT scaling), under this decoder's
        rule for corrupt data."""
        height, width = int(self.heights[index]), int(self.widths[index])
        want = (-(-height // denom), -(-width // denom))
        try:
            rgb = jpeg.decode_record(self.payload(index), self.accept_jpeg_warnings, *want)
        except JpegError as err:
            raise SampleError(index, self.name, f"cannot decode JPEG: {err}") from None
        if rgb.shape[:2] != want:
            raise SampleError(index, self.name, f"stored JPEG's size differs from its record: "
                              f"decoded {rgb.shape[1]}x{rgb.shape[0]} at 1/{denom} scale, "
                              f"record {width}x{height}")
        return rgb

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


class SimpleRGBImageDecoder(ImageDecoder):
    """Whole images, unresized: every image of the file must have the same size (as FFCV)."""

    def __init__(self, *, accept_jpeg_warnings: bool = False, use_libturbojpeg: bool = True):
        super().__init__(None, accept_jpeg_warnings=accept_jpeg_warnings,
                         use_libturbojpeg=use_libturbojpeg)

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
        return np.stack([np.zeros(n), np.zeros(n), heights, widths], axis=1).astype(np.float64)


class RandomResizedCrop(ImageDecoder):
    """torchvision's RandomResizedCrop(size, scale, ratio) with antialias=True: a box of area
    ~U(scale) of the image and log aspect ratio ~U(log ratio) (ten tries, then the central
    fallback), resized to ``output_size`` (int or (height, width)).  See ImageDecoder for
    ``dct_scaling``, ``accept_jpeg_warnings`` and ``use_libturbojpeg``."""

    def __init__(self, output_size: Any, scale: Sequence[float] = (0.08, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3), *, dct_scaling: bool = True,
                 accept_jpeg_warnings: bool = False, use_libturbojpeg: bool = True):
        super().__init__(output_size, dct_scaling, accept_jpeg_warnings, use_libturbojpeg)
        self.scale = check_range("scale", scale)
        self.ratio = check_range("ratio", ratio)
        if self.ratio[0] <= 0:
            raise ValueError(f"ratio must be positive, got {ratio}")

    def boxes(self, ctx, heights, widths):
        out = np.empty((len(heights), 4), dtype=np.float64)
        random_resized_crop_boxes(ctx.seed, ctx.epoch, ctx.indices,
                                  OP_CROP + VIEW_STRIDE * self.view, heights, widths,
                                  self.scale[0], self.scale[1], math.log(self.ratio[0]),
                                  math.log(self.ratio[1]), out)
        return out


CENTER_CROP_BOXES = ("torchvision", "ffcv")


class CenterCrop(ImageDecoder):
    """The validation crop, resized to ``output_size`` (int or (height, width)).

    box="torchvision" (default): torchvision's ``Resize(resize_size)`` + ``CenterCrop(size)``
    with ``antialias=True``, in one resampling: the shorter side is resized to ``resize_size``
    (default ``floor(min(output_size) / ratio)``: 256 for 224 and ratio 224/256, as timm's
    ``crop_pct``), the window is placed as torchvision places it, and the filter reads the
    window's neighbours as resizing the whole image does.  Where the window is larger than the
    resized image (non-square outputs only) torchvision pads with zeros; here the window is cut
    to the image and stretched.
    box="ffcv": FFCV's CenterCropRGBImageDecoder: the centred square of side
    ``int(ratio * shorter side)``, cropped, then resized (the box differs from torchvision's by
    up to a few source pixels).
    dct_scaling is off by default here: validation images then decode at full scale, as
    torchvision's, so accuracy compares with torchvision-evaluated baselines.  See ImageDecoder
    for ``dct_scaling``, ``accept_jpeg_warnings`` and ``use_libturbojpeg``."""

    def __init__(self, output_size: Any, ratio: float = DEFAULT_CROP_RATIO,
                 box: str = "torchvision", resize_size: Optional[int] = None, *,
                 dct_scaling: bool = False, accept_jpeg_warnings: bool = False,
                 use_libturbojpeg: bool = True):
        super().__init__(output_size, dct_scaling, accept_jpeg_warnings, use_libturbojpeg)
        if not 0 < ratio <= 1:
            raise ValueError(f"ratio must be in (0, 1], got {ratio}")
        if box not in CENTER_CROP_BOXES:
            raise ValueError(f"box must be one of {CENTER_CROP_BOXES}, got {box!r}")
        self.ratio = float(ratio)
        self.box = box
        if resize_size is None:
            # The tolerance keeps 224 / (224 / 256) at 256 despite float rounding.
            resize_size = int(math.floor(min(self.output_size) / self.ratio + 1e-9))
        elif box == "ffcv":
            raise ValueError("resize_size applies to box='torchvision' only")
        if resize_size < 1:
            raise ValueError(f"resize_size must be positive, got {resize_size}")
        self.resize_size = int(resize_size)
        self.within_box = box == "ffcv"

    def boxes(self, ctx, heights, widths):
        if self.box == "ffcv":
            return np.array([center_crop_box(int(h), int(w), self.ratio)
                             for h, w in zip(heights, widths)],
                            dtype=np.float64).reshape(-1, 4)
        return torchvision_center_crop_boxes(heights, widths, self.resize_size,
                                             *self.output_size)


class MultiView(ImageDecoder):
    """Several independently augmented views of each image, decoding its JPEG once.

    ``MultiView(RandomResizedCrop(224), RandomResizedCrop(224))`` gives BYOL/SimCLR's two views;
    ``MultiView(RandomResizedCrop(224, scale=(0.4, 1)), *[RandomResizedCrop(96,
    scale=(0.05, 0.4))] * 6)`` gives DINO-style global and local crops (repeating one decoder
    object is fine: each position is a view with its own parameters).  Each view draws its own
    box and flip bit; the pipeline yields one output per view.  A RandomHorizontalFlip right
    after MultiView flips every view independently."""

    def __init__(self, *views: ImageDecoder, accept_jpeg_warnings: bool = False,
                 use_libturbojpeg: bool = True):
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
        super().__init__(None, accept_jpeg_warnings=accept_jpeg_warnings,
                         use_libturbojpeg=use_libturbojpeg)
        self._views = copies

    @property
    def views(self) -> list[ImageDecoder]:
        return self._views


class CenterCropRGBImageDecoder(CenterCrop):
    """FFCV's name and box: ``CenterCrop(output_size, ratio, box="ffcv")``."""

    def __init__(self, output_size: Any, ratio: float = DEFAULT_CROP_RATIO, **options: Any):
        super().__init__(output_size, ratio, box="ffcv", **options)


# FFCV's names, so that switching is a change of imports.
RandomResizedCropRGBImageDecoder = RandomResizedCrop
__all__ = ["ImageDecoder", "SimpleRGBImageDecoder", "RandomResizedCrop", "CenterCrop", "MultiView",
           "RandomHorizontalFlip", "RandomResizedCropRGBImageDecoder", "CenterCropRGBImageDecoder"]
