"""Image decoders: the crop samplers.  Each draws a batch's crop boxes and flip bits first
(a typed ``CropParams``, fastdata.ops.crops), then its backend (fastdata.backends, chosen
with ``backend=``, default "cpu") decodes only what the crops need, resizes with an
anti-aliased filter and flips while writing.

Per sample:

1. the box (top, left, height, width) in stored pixels comes from the counter-based RNG
   (RandomResizedCrop) or from the image size (CenterCrop, full image);
2. the CPU backend decodes a JPEG at the smallest DCT scale (1/8, 1/4, 1/2, 1) whose result
   still has at least the output's size (``dct_scaling=False``: always at full scale), and only
   over the rows and columns of the box (libjpeg-turbo 3's region decoding); a raw image is read
   in place from the file;
3. the box is resized to the output size with torchvision's anti-aliased bilinear filter
   (``antialias=True``), mirrored when the flip bit is set.  The crop ops' filter reads only
   the box's pixels, as torchvision's crop-then-resize.

Corrupt JPEG data is an error (``SampleError`` with the sample index and field) by default:
a record that does not end with the end-of-image marker, a zeroed quantisation table, and data
that libjpeg decodes only with a warning (see jpeg.decode_record).  ``accept_jpeg_warnings=True``
accepts what libjpeg can decode, as FFCV does.

The crops stay in ``ctx.crops[field]``, where later ops (label pooling, CutMix region labels)
read them, and ``params_record`` reports them in stored and in original-image pixels.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Union

import numpy as np

from ..fields import RGBImageField
from ..pixels.image_kernel import OPT_MAX_DENOM, OPT_WITHIN_BOX
from ..rng import OP_CROP, OP_FLIP, VIEW_STRIDE, draws
from ..backends.base import ImageBackend, StoredImages, make_backend
from .base import BatchContext, BatchOp, Decoder, check_range, register_default_decoder
from .crop_params import (center_crop_box, random_resized_crop_boxes,
                          torchvision_center_crop_boxes)
from .crops import CropParams, PastePlan

DEFAULT_CROP_RATIO = 224 / 256


class RandomHorizontalFlip(BatchOp):
    """FFCV's RandomHorizontalFlip(flip_prob): mirror each image left-right with probability
    ``flip_prob``.

    In an image decoder's pipeline the decoder's sampler draws the bit of each view (keyed
    (seed, epoch, index, OP_FLIP + VIEW_STRIDE * view)) and records it in the batch's crops;
    directly after the decoder the flip is folded into it (the resize writes mirrored rows, no
    extra pass); elsewhere this op flips the batch tensor of each view with that view's bit.
    Either way the same samples are flipped."""

    #: In FFCV's pipeline model the op works on raw arrays (fastdata.ops.ffcv_operation).
    ffcv_jit_mode = True

    def __init__(self, flip_prob: float = 0.5):
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"flip probability must be in [0, 1], got {flip_prob}")
        self.flip_prob = float(flip_prob)

    def __call__(self, batch: Any, ctx: BatchContext) -> Any:
        import torch
        if batch.dim() != 4:
            raise ValueError(f"RandomHorizontalFlip needs an image batch, got {tuple(batch.shape)}")
        bits = draws(ctx.seed, ctx.epoch, ctx.indices, OP_FLIP + VIEW_STRIDE * ctx.view, 0) \
            < self.flip_prob
        flips = torch.from_numpy(bits)
        width_dim = 3 if batch.shape[1] in (1, 3) and batch.shape[3] not in (1, 3) else 2
        flips = flips.to(batch.device).view(-1, 1, 1, 1)
        return torch.where(flips, batch.flip(width_dim), batch)


class ImageDecoder(Decoder):
    """Base of the image decoders: a sampler that draws each batch's ``CropParams`` and an
    ``ImageBackend`` that decodes them; output ``output_size`` (height, width) uint8 RGB.

    dct_scaling: decode a JPEG at 1/2, 1/4 or 1/8 scale when the box is that many times larger
    than the output (faster; the README gives what it costs in pixels).  False: always decode
    at full scale, then resize.
    backend: the name of the image backend ("cpu", the default; see fastdata.backends.BACKENDS) or
    an ImageBackend.  The two options below go to a backend given by name.
    accept_jpeg_warnings: accept JPEG data that libjpeg decodes only with a warning (corrupt or
    truncated data, decoded as best it can), as FFCV does; False (default) raises
    ``SampleError``.
    use_libturbojpeg: region decoding with libjpeg-turbo 3 where it is installed (default);
    False decodes JPEGs with simplejpeg (whole image at the DCT scale, then the same resize)."""

    parallel = True
    #: decode_range honours a PastePlan (a CutMix drawn before decoding, see Mixup).
    supports_paste = True
    #: the filter reads only the box's pixels (torchvision's crop-then-resize)
    within_box = True
    field_types = (RGBImageField,)

    def __init__(self, output_size: Optional[Sequence[int]] = None, dct_scaling: bool = True,
                 accept_jpeg_warnings: bool = False, use_libturbojpeg: bool = True,
                 backend: Union[str, ImageBackend] = "cpu"):
        self.output_size = output_size
        self.dct_scaling = bool(dct_scaling)
        self.backend = make_backend(backend, use_libturbojpeg=use_libturbojpeg,
                                    accept_jpeg_warnings=accept_jpeg_warnings)
        self.flip_p = 0.0               # probability of the pipeline's RandomHorizontalFlip
        self.flip_in_decoder = False    # True: the backend applies it while resizing
        self.view = 0

    @property
    def device(self) -> str:
        return self.backend.device

    @property
    def output_size(self) -> Optional[tuple[int, int]]:
        """(height, width) of each output image.  May be set between epochs (FFCV's progressive
        resizing): the Loader's next ``iter()`` reallocates its ring for the new size."""
        return self._output_size

    @output_size.setter
    def output_size(self, size: Any) -> None:
        self._output_size = None if size is None else _pair(size)

    @property
    def views(self) -> list["ImageDecoder"]:
        """The decoders whose outputs this one produces (itself, or MultiView's views)."""
        return [self]

    @property
    def output_count(self) -> int:
        return len(self.views)

    def absorb(self, ops: list) -> list:
        """The sampler draws the flips of the pipeline's first RandomHorizontalFlip (per view);
        directly after the decoder it is folded into the backend's resize."""
        ops = super().absorb(ops)
        flip = next((op for op in ops if isinstance(op, RandomHorizontalFlip)), None)
        if flip is None:
            return ops
        for view in self.views:
            view.flip_p = flip.flip_prob
            view.flip_in_decoder = ops[0] is flip
        return ops[1:] if ops[0] is flip else ops

    def paste_size(self) -> Optional[tuple[int, int]]:
        """The output (height, width) a CutMix may paste into while decoding, or None."""
        return self.output_size if (self.supports_paste and self.backend.supports_paste
                                    and len(self.views) == 1) else None

    def task_ranges(self, n: int) -> list[tuple[int, int]]:
        """The backend's cut of a batch into worker tasks (one range for a batched GPU
        decoder)."""
        return self.backend.task_ranges(n)

    def bind(self, reader, name: str, field_index: int) -> None:
        super().bind(reader, name, field_index)
        self.images = StoredImages.from_reader(reader, name)
        self.heights, self.widths = self.images.heights, self.images.widths
        self.orig_heights, self.orig_widths = self.images.orig_heights, self.images.orig_widths
        self.setup_backend(getattr(self, "batch_size", 1))

    def setup_backend(self, batch_size: int) -> None:
        """Bind the backend to the field (after bind, once the batch size is known)."""
        self.batch_size = batch_size
        self.backend.bind(self.images, [view.output_size for view in self.views], batch_size)

    def unbind(self) -> None:
        super().unbind()
        self.images = self.heights = self.widths = self.orig_heights = self.orig_widths = None
        self.backend.unbind()

    def sample_shape(self, batch_size: int):
        """(shape, dtype), or a list of them for several views."""
        shapes = [((*view.output_size, 3), np.uint8) for view in self.views]
        return shapes[0] if len(shapes) == 1 else shapes

    def allocate(self, batch_size: int, ring_size: int, pin: bool) -> list:
        slots = self.backend.allocate(batch_size, ring_size, pin)
        return slots if len(self.views) > 1 else [slot[0] for slot in slots]

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

    def sample(self, ctx: BatchContext) -> CropParams:
        """Draw the batch's crops (the sampler's job)."""
        idx = ctx.indices
        heights, widths = self.heights[idx], self.widths[idx]
        views = self.views
        flips = np.zeros((len(views), len(idx)), dtype=np.uint8)
        for v, view in enumerate(views):
            if view.flip_p > 0:
                flips[v] = draws(ctx.seed, ctx.epoch, idx, OP_FLIP + VIEW_STRIDE * view.view,
                                 0) < view.flip_p
        in_decoder = np.array([view.flip_in_decoder for view in views], dtype=bool)
        paste = ctx.paste_plan(self.name)
        if paste is not None and (len(views) > 1 or not self.supports_paste):
            raise RuntimeError(f"{type(self).__name__} for {self.name!r} cannot paste while "
                               f"decoding")
        return CropParams(
            boxes=np.stack([np.ascontiguousarray(view.boxes(ctx, heights, widths),
                                                 dtype=np.float64) for view in views]),
            flips=flips, decoder_flips=np.where(in_decoder[:, None], flips, 0).astype(np.uint8),
            sizes=np.stack([heights, widths], axis=1),
            original_sizes=np.stack([self.orig_heights[idx], self.orig_widths[idx]], axis=1),
            output_sizes=tuple(view.output_size for view in views),
            view_opts=self.view_options(),
            paste=paste if paste is not None else PastePlan.none(len(idx)))

    def prepare(self, ctx: BatchContext, out: Any) -> None:
        ctx.crops[self.name] = self.sample(ctx)

    def make_worker_state(self) -> Any:
        return self.backend.make_worker_state()

    def release_worker_state(self, state: Any) -> None:
        self.backend.release_worker_state(state)

    def decode_range(self, ctx: BatchContext, start: int, stop: int, out: Any,
                     worker: Any) -> None:
        outs = tuple(out) if isinstance(out, (tuple, list)) else (out,)
        self.backend.decode_range(ctx.crops[self.name], ctx.indices, start, stop, outs, worker)

    def params_record(self, ctx: BatchContext) -> list[np.ndarray]:
        """Per view, float64[n, 9]: box (top, left, height, width) in stored pixels, the same
        box in original-image pixels (before max_resolution), flip bit."""
        return ctx.crops[self.name].params_record()


def _pair(size: Any) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        size = (size, size)
    h, w = (int(s) for s in size)
    if h <= 0 or w <= 0:
        raise ValueError(f"output size must be positive, got {size}")
    return h, w


@register_default_decoder
class SimpleRGBImageDecoder(ImageDecoder):
    """Whole images, unresized: every image of the file must have the same size (as FFCV)."""

    def __init__(self, *, accept_jpeg_warnings: bool = False, use_libturbojpeg: bool = True,
                 backend: Union[str, ImageBackend] = "cpu"):
        super().__init__(None, accept_jpeg_warnings=accept_jpeg_warnings,
                         use_libturbojpeg=use_libturbojpeg, backend=backend)

    def bind(self, reader, name, field_index):
        super().bind(reader, name, field_index)
        if len(self.heights) and (np.any(self.heights != self.heights[0])
                                  or np.any(self.widths != self.widths[0])):
            raise TypeError(f"SimpleRGBImageDecoder needs images of one size; field {name!r} "
                            f"has several: use RandomResizedCrop or CenterCrop")
        self.output_size = (int(self.heights[0]), int(self.widths[0])) if len(self.heights) \
            else (1, 1)
        self.setup_backend(getattr(self, "batch_size", 1))     # now that the size is known

    def boxes(self, ctx, heights, widths):
        n = len(heights)
        return np.stack([np.zeros(n), np.zeros(n), heights, widths], axis=1).astype(np.float64)


class RandomResizedCrop(ImageDecoder):
    """torchvision's RandomResizedCrop(size, scale, ratio) with antialias=True: a box of area
    ~U(scale) of the image and log aspect ratio ~U(log ratio) (ten tries, then the central
    fallback), resized to ``output_size`` (int or (height, width)).  See ImageDecoder for
    ``dct_scaling``, ``backend``, ``accept_jpeg_warnings`` and ``use_libturbojpeg``."""

    def __init__(self, output_size: Any, scale: Sequence[float] = (0.08, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3), *, dct_scaling: bool = True,
                 accept_jpeg_warnings: bool = False, use_libturbojpeg: bool = True,
                 backend: Union[str, ImageBackend] = "cpu"):
        super().__init__(output_size, dct_scaling, accept_jpeg_warnings, use_libturbojpeg,
                         backend)
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
    for ``dct_scaling``, ``backend``, ``accept_jpeg_warnings`` and ``use_libturbojpeg``."""

    def __init__(self, output_size: Any, ratio: float = DEFAULT_CROP_RATIO,
                 box: str = "torchvision", resize_size: Optional[int] = None, *,
                 dct_scaling: bool = False, accept_jpeg_warnings: bool = False,
                 use_libturbojpeg: bool = True, backend: Union[str, ImageBackend] = "cpu"):
        super().__init__(output_size, dct_scaling, accept_jpeg_warnings, use_libturbojpeg,
                         backend)
        if not 0 < ratio <= 1:
            raise ValueError(f"ratio must be in (0, 1], got {ratio}")
        if box not in CENTER_CROP_BOXES:
            raise ValueError(f"box must be one of {CENTER_CROP_BOXES}, got {box!r}")
        self.ratio = float(ratio)
        self.box = box
        if resize_size is not None:
            if box == "ffcv":
                raise ValueError("resize_size applies to box='torchvision' only")
            if resize_size < 1:
                raise ValueError(f"resize_size must be positive, got {resize_size}")
            resize_size = int(resize_size)
        self._resize_size = resize_size
        self.within_box = box == "ffcv"

    @property
    def resize_size(self) -> int:
        """The shorter side torchvision's Resize gives the image: as given, else
        floor(min(output_size) / ratio), which follows a change of output_size."""
        if self._resize_size is not None:
            return self._resize_size
        # The tolerance keeps 224 / (224 / 256) at 256 despite float rounding.
        return max(1, int(math.floor(min(self.output_size) / self.ratio + 1e-9)))

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
    box and flip bit; the pipeline yields one output per view.  A RandomHorizontalFlip in the
    pipeline flips every view independently (view v's bit keyed OP_FLIP + VIEW_STRIDE * v).
    The views' own backends are not used: MultiView's ``backend`` decodes them all."""

    def __init__(self, *views: ImageDecoder, accept_jpeg_warnings: bool = False,
                 use_libturbojpeg: bool = True, backend: Union[str, ImageBackend] = "cpu"):
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
                         use_libturbojpeg=use_libturbojpeg, backend=backend)
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
