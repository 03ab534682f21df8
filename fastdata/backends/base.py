"""The image-backend interface: what turns an image decoder's ``CropParams`` into pixels.

An image decoder (RandomResizedCrop, CenterCrop, MultiView, SimpleRGBImageDecoder, ReplayedCrop)
is a *sampler*: it draws the crops of a batch (``fastdata.ops.crops.CropParams``) and hands
them to its backend, chosen on the op: ``RandomResizedCrop(224, backend="cpu")``.  A backend

- declares the ``device`` its outputs live on,
- allocates its own output slots (``allocate``: host memory, pinned host memory, or device
  memory for a GPU backend),
- says how a batch is cut into worker tasks (``task_ranges``: small ranges for per-sample CPU
  work, one range for a batched GPU decoder),
- decodes a range of batch positions from ``CropParams`` (``decode_range``), in the loader's
  worker threads, with per-thread state (``make_worker_state``).

A new backend subclasses ``ImageBackend`` and is registered in ``BACKENDS`` under its name.
The shared pieces of the batched backends (regions to decode, JPEG checks, writing a CutMix
paste plan) are here; pixel kernels and codecs go in ``fastdata.pixels``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Optional, Union

import numpy as np

from ..fields.rgb_image import MODE_JPG
from ..pixels import jpeg
from ..pixels.image_kernel import EDGE, OPT_WITHIN_BOX
from ..ops.base import host_array
from ..ops.crops import CropParams, PastePlan

@dataclass
class StoredImages:
    """The stored images of one RGBImageField of an open file, as the backends read them.

    data: the file's bytes (uint8); modes uint8[N] (MODE_JPG or raw); ptrs, sizes int64[N]: each
    payload's place; heights, widths int64[N]: stored sizes; orig_heights, orig_widths int64[N]:
    sizes before max_resolution; name: the field (for error messages)."""
    data: np.ndarray
    modes: np.ndarray
    ptrs: np.ndarray
    sizes: np.ndarray
    heights: np.ndarray
    widths: np.ndarray
    orig_heights: np.ndarray
    orig_widths: np.ndarray
    name: str

    @classmethod
    def from_reader(cls, reader, name: str) -> "StoredImages":
        column = reader.column(name)
        stored, original = reader.image_sizes(name)
        return cls(reader.data, np.ascontiguousarray(column["mode"]).astype(np.uint8),
                   reader.payload_ptrs(name).astype(np.int64),
                   reader.payload_sizes(name).astype(np.int64),
                   *(np.ascontiguousarray(a) for a in (stored[:, 0], stored[:, 1],
                                                       original[:, 0], original[:, 1])), name)

    def payload(self, index: int) -> np.ndarray:
        """Sample ``index``'s stored bytes (a view into the file)."""
        ptr, size = int(self.ptrs[index]), int(self.sizes[index])
        return self.data[ptr:ptr + size]

    @property
    def max_jpeg_pixels(self) -> int:
        return int((self.widths * self.heights)[self.modes == MODE_JPG].max(initial=0))


class ImageBackend:
    """Decodes crops into output slots.  See the module docstring; ``CPUBackend`` is the
    reference implementation."""

    #: The name ops take in ``backend=``.
    name = ""
    #: Where the outputs live ("cpu", or a torch device string for a GPU backend).
    device = "cpu"
    #: Batch positions per worker task (see task_ranges).
    task_size = 4
    #: decode_range honours a PastePlan (a CutMix drawn before decoding); False: Mixup cuts
    #: and pastes the decoded batch instead.
    supports_paste = True

    def bind(self, images: StoredImages, output_sizes: list[tuple[int, int]],
             batch_size: int) -> None:
        """Attach to a field's stored images; outputs are uint8 [batch_size, h, w, 3] per view."""
        self.images, self.output_sizes, self.batch_size = images, list(output_sizes), batch_size

    def unbind(self) -> None:
        """Drop the views of the file bind kept."""
        self.images = None

    def allocate(self, batch_size: int, ring_size: int, pin: bool) -> list[tuple]:
        """Per ring slot, a tuple of one output array per view (uint8 [batch_size, h, w, 3]).
        pin: page-locked host memory (the batches go to a GPU afterwards)."""
        rings = [host_array((ring_size, batch_size, h, w, 3), np.uint8, pin)
                 for h, w in self.output_sizes]
        return [tuple(ring[s] for ring in rings) for s in range(ring_size)]

    def task_ranges(self, n: int) -> list[tuple[int, int]]:
        """How a batch of n positions is cut into worker tasks: (start, stop) ranges of
        ``crops.paste.order``, covering 0..n once; default: ranges of ``task_size``."""
        step = max(1, int(self.task_size))
        return [(s, min(s + step, n)) for s in range(0, n, step)]

    def make_worker_state(self) -> Any:
        """Per worker thread scratch (buffers, codec handles)."""
        return None

    def release_worker_state(self, state: Any) -> None:
        """Free what make_worker_state made."""

    def decode_range(self, crops: CropParams, indices: np.ndarray, start: int, stop: int,
                     outs: tuple, state: Any,
                     describe: Optional[Callable[[int], str]] = None) -> None:
        """Decode positions crops.paste.order[start:stop]: position k is sample indices[k], view
        v goes to outs[v][k].  A bad sample raises SampleError; ``describe(k)`` adds to the
        message of position k (e.g. " (mixing partner of sample 12)")."""
        raise NotImplementedError



def device_slots(output_sizes: list[tuple[int, int]], batch_size: int, ring_size: int,
                 device: str) -> list[tuple]:
    """A GPU backend's ring: per slot, one uint8 [batch_size, h, w, 3] device tensor per view,
    allocated once (the batches reuse them: device memory stays flat)."""
    import torch
    rings = [torch.empty((ring_size, batch_size, h, w, 3), dtype=torch.uint8, device=device)
             for h, w in output_sizes]
    return [tuple(ring[s] for ring in rings) for s in range(ring_size)]


def missing_extra(backend: str, extra: str, packages: str) -> ImportError:
    """The one-line error of a backend whose optional packages are not installed."""
    return ImportError(f"image backend {backend!r} needs {packages}: "
                       f"pip install 'fastdata[{extra}]'")


def jpeg_problem(images: StoredImages, index: int, strict: bool) -> Optional[str]:
    """Why sample ``index``'s JPEG record must not go to a batched decoder, or None: the CPU
    kernel's checks that a decoder library does not make (strict: the record ends with FF D9
    and has no zeroed quantisation table; always: the header's size is the record's)."""
    data = images.payload(index)
    if strict and not jpeg.ends_with_eoi(data):
        return jpeg.NO_EOI
    if strict and not jpeg.quant_tables_valid(data):
        return jpeg.ZERO_QUANT
    try:
        info = jpeg.parse_header(data.tobytes())
    except jpeg.JpegError as err:
        return str(err)
    width, height = int(images.widths[index]), int(images.heights[index])
    if (info.width, info.height) != (width, height):
        return (f"stored JPEG's size differs from its record: header {info.width}x"
                f"{info.height}, record {width}x{height}")
    return None


@dataclass
class RegionPlan:
    """What a batched decoder decodes for m samples and V views, and how each view is cut.

    regions: int64[m, 4] (top, left, height, width) in stored pixels: the union of the pixels
      the views' filters read (the box's pixels for a filter within the box; the box widened
      by the filter's reach, inside the image, otherwise), and a few pixels more (see
      region_plan);
    slices: int64[V, m, 4] (top, left, height, width) of each view's read area inside the
      region;
    rois: float64[V, m, 4] (y0, x0, y1, x1) of each view's box inside its slice, x0 > x1 for a
      mirrored view (the resize reads the box right to left)."""
    regions: np.ndarray
    slices: np.ndarray
    rois: np.ndarray



class CheckedPart(NamedTuple):
    """A range of a batch that a batched decoder is to decode (see checked_part)."""
    positions: np.ndarray     # int64: batch positions, in the paste order
    samples: np.ndarray       # int64: their sample indices
    is_jpeg: np.ndarray       # bool: which are JPEG records (the others raw)


def checked_part(images: StoredImages, crops: CropParams, indices: np.ndarray, start: int,
                 stop: int, strict: bool,
                 fail: Callable[[int, int, str], BaseException]) -> CheckedPart:
    """The batch positions ``crops.paste.order[start:stop]`` a batched decoder is to decode,
    once every JPEG record among them passed ``jpeg_problem``; otherwise raises
    ``fail(position, sample index, problem)`` for the first that did not."""
    positions = np.ascontiguousarray(crops.paste.order[start:stop])
    samples = indices[positions]
    is_jpeg = images.modes[samples] == MODE_JPG
    for k, index in zip(positions[is_jpeg], samples[is_jpeg]):
        problem = jpeg_problem(images, int(index), strict)
        if problem is not None:
            raise fail(int(k), int(index), problem)
    return CheckedPart(positions, samples, is_jpeg)


def region_plan(crops: CropParams, positions: np.ndarray, edge: int = EDGE) -> RegionPlan:
    """The RegionPlan of batch positions ``positions`` (int64[m]) of ``crops``: what the CPU
    kernel reads at full scale (pixels.image_kernel.decode_range without its DCT scaling),
    ``edge`` pixels more on each side (inside the image)."""
    boxes = crops.boxes[:, positions].astype(np.float64)           # [V, m, 4]
    flips = crops.decoder_flips[:, positions] != 0                 # [V, m]
    sizes = crops.sizes[positions].astype(np.int64)                # [m, 2]
    out = np.array(crops.output_sizes, dtype=np.float64)           # [V, 2]
    within = crops.view_opts[:, OPT_WITHIN_BOX] != 0               # [V]
    start, length = boxes[..., :2], boxes[..., 2:]
    # The filter's reach beyond the box (pixels.image_kernel._read_margin), 0 within the box.
    margin = np.where(within[:, None, None], 0,
                      np.ceil(np.maximum(length / out[:, None, :], 1.0)) + 1)
    lo = np.clip(np.floor(start) - margin, 0, sizes[None]).astype(np.int64)
    hi = np.clip(np.ceil(start + length) + margin, 0, sizes[None]).astype(np.int64)
    hi = np.maximum(hi, lo + 1)
    # Decoders upsample chroma from neighbouring samples, which a region decode lacks at its
    # edges: EDGE more pixels on each side make the read area's pixels a full decode's.
    region_lo = np.maximum(lo.min(axis=0) - edge, 0)               # [m, 2]
    region_hi = np.minimum(hi.max(axis=0) + edge, sizes)
    regions = np.concatenate([region_lo, region_hi - region_lo], axis=1)
    slices = np.concatenate([lo - region_lo[None], hi - lo], axis=2)
    y0, x0 = start[..., 0] - lo[..., 0], start[..., 1] - lo[..., 1]
    y1, x1 = y0 + length[..., 0], x0 + length[..., 1]
    rois = np.stack([y0, np.where(flips, x1, x0), y1, np.where(flips, x0, x1)], axis=2)
    return RegionPlan(np.ascontiguousarray(regions), np.ascontiguousarray(slices),
                      np.ascontiguousarray(rois))


def write_outputs(decoded: Any, positions: np.ndarray, out: Any, paste: PastePlan,
                  view: int) -> None:
    """Write view ``view``'s decoded images (decoded[i] for batch position positions[i]) into
    its output ``out`` ([batch, H, W, 3], numpy or torch), following view 0's CutMix paste plan
    as the CPU kernel does: position k's region paste.boxes[k] (y0, y1, x0, x1) goes to
    out[paste.paste_to[k]], the rest to out[k].  Without a paste: out[positions] = decoded."""
    pasting = view == 0 and paste.active
    if not pasting:
        first = int(positions[0]) if len(positions) else 0
        if len(positions) and np.array_equal(positions, np.arange(first, first + len(positions))):
            out[first:first + len(positions)] = decoded
        else:
            for i, k in enumerate(positions):
                out[int(k)] = decoded[i]
        return
    for i, k in enumerate(positions):
        k, j = int(k), int(paste.paste_to[k])
        if j < 0:
            out[k] = decoded[i]
            continue
        y0, y1, x0, x1 = (int(c) for c in paste.boxes[k])
        src, dst = decoded[i], out[k]
        # Everything but the box to k (four bands), the box to its partner j.
        dst[:y0] = src[:y0]
        dst[y1:] = src[y1:]
        dst[y0:y1, :x0] = src[y0:y1, :x0]
        dst[y0:y1, x1:] = src[y0:y1, x1:]
        out[j][y0:y1, x0:x1] = src[y0:y1, x0:x1]


def failing_position(positions: np.ndarray, decode_one: Callable[[int], None]) -> Optional[int]:
    """The first of ``positions`` that ``decode_one(k)`` cannot decode alone (it raises), or
    None: finds the sample behind an error a batched decoder reports for the whole batch."""
    for k in positions:
        try:
            decode_one(int(k))
        except Exception:
            return int(k)
    return None


#: Backend names -> "module:class" (imported on first use, so that naming a backend never
#: imports an optional package); a new backend registers here.
BACKENDS: dict[str, str] = {"cpu": "cpu:CPUBackend", "dali": "dali:DaliBackend",
                            "nvimgcodec": "nvimgcodec:NvImageCodecBackend",
                            "auto": "auto:auto_backend"}


def make_backend(backend: Union[str, ImageBackend], **options: Any) -> ImageBackend:
    """The backend an op names (``options`` go to its constructor), or the instance given."""
    if isinstance(backend, ImageBackend):
        return backend
    where = BACKENDS.get(backend) if isinstance(backend, str) else None
    if where is None:
        raise ValueError(f"unknown image backend {backend!r}; known: {', '.join(BACKENDS)}")
    module, name = where.split(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), name)(**options)


__all__ = ["ImageBackend", "StoredImages", "BACKENDS", "make_backend", "RegionPlan",
           "region_plan", "write_outputs", "jpeg_problem", "checked_part", "CheckedPart", "missing_extra", "device_slots"]
