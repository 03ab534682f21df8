"""Image backends: what turns an image decoder's ``CropParams`` into pixels.

An image decoder (RandomResizedCrop, CenterCrop, MultiView, SimpleRGBImageDecoder, ReplayedCrop)
is a *sampler*: it draws the crops of a batch (``fastdata.ops.crops.CropParams``) and hands
them to its backend, chosen on the op: ``RandomResizedCrop(224, backend="cpu")``.  A backend

- declares the ``device`` its outputs live on,
- allocates its own output slots (``allocate``: host memory, pinned host memory, or device
  memory for a GPU backend),
- decodes a range of batch positions from ``CropParams`` (``decode_range``), in the loader's
  worker threads, with per-thread state (``make_worker_state``).

A new backend subclasses ``ImageBackend`` and is registered in ``BACKENDS`` under its name.
Its pixel kernels and codecs go in ``fastdata.pixels``.

``CPUBackend`` ("cpu", the default) runs ``pixels.image_kernel``: libjpeg-turbo 3's region
decoder where installed (``use_libturbojpeg=True``, and the environment variable
``FASTDATA_NO_LIBTURBOJPEG`` unset), else simplejpeg decodes the whole JPEG at the DCT scale and
the same resize follows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import numpy as np

from ..fields.rgb_image import MODE_JPG
from ..pixels import jpeg, libturbojpeg
from ..pixels.image_kernel import (OPT_MAX_DENOM, OPT_WITHIN_BOX, STATUS_ERROR,
                                   STATUS_MISMATCH, STATUS_NEEDS_PYTHON, STATUS_NO_EOI,
                                   STATUS_WARNING, STATUS_ZERO_QUANT, dct_denominator,
                                   decode_kernel, resize_decoded)
from ..pixels.jpeg import JpegError
from ..pixels.resample import scratch_size
from ..reader import SampleError
from .base import host_array
from .crops import CropParams

_EMPTY = np.zeros(4, dtype=np.int64)      # an empty paste region
_REASONS = {STATUS_MISMATCH: "stored JPEG's size differs from its record",
            STATUS_NO_EOI: jpeg.NO_EOI, STATUS_ZERO_QUANT: jpeg.ZERO_QUANT}
_FAILED = (STATUS_ERROR, *_REASONS)


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


class CPUBackend(ImageBackend):
    """The Numba kernel of ``pixels.image_kernel`` in the worker threads (no GIL).

    use_libturbojpeg: region decoding with libjpeg-turbo 3 where installed (default); False
    decodes JPEGs with simplejpeg (whole image at the DCT scale, then the same resize).
    accept_jpeg_warnings: accept JPEG data that libjpeg decodes only with a warning, as FFCV;
    False raises SampleError."""

    name = "cpu"
    device = "cpu"

    def __init__(self, use_libturbojpeg: bool = True, accept_jpeg_warnings: bool = False):
        self.use_libturbojpeg = bool(use_libturbojpeg)
        self.accept_jpeg_warnings = bool(accept_jpeg_warnings)

    def __repr__(self) -> str:
        return (f"CPUBackend(use_libturbojpeg={self.use_libturbojpeg}, "
                f"accept_jpeg_warnings={self.accept_jpeg_warnings})")

    @property
    def uses_turbo(self) -> bool:
        return self.use_libturbojpeg and libturbojpeg.AVAILABLE

    def make_worker_state(self) -> dict:
        images = self.images
        max_h, max_w = int(images.heights.max(initial=1)), int(images.widths.max(initial=1))
        scratch = max(scratch_size(h, w, max_h, max_w) for h, w in self.output_sizes)
        return {
            "region": np.empty(max(images.max_jpeg_pixels * 3, 3), dtype=np.uint8),
            "scratch": np.empty(scratch, dtype=np.float32),
            "handle": libturbojpeg.new_handle() if libturbojpeg.AVAILABLE else 0,
            "status": np.zeros(self.batch_size, dtype=np.int64),
        }

    def release_worker_state(self, state: dict) -> None:
        if state["handle"]:
            libturbojpeg.free_handle(state["handle"])
            state["handle"] = 0

    def decode_range(self, crops: CropParams, indices: np.ndarray, start: int, stop: int,
                     outs: tuple, state: dict,
                     describe: Optional[Callable[[int], str]] = None) -> None:
        images, paste = self.images, crops.paste
        status = state["status"]
        if len(status) < len(indices):
            status = state["status"] = np.zeros(len(indices), dtype=np.int64)
        use_turbo = self.uses_turbo
        decode_kernel(use_turbo)(images.data, images.modes, images.ptrs, images.sizes,
                                 images.widths, images.heights, indices, paste.order,
                                 crops.boxes, crops.decoder_flips, crops.view_opts, start, stop,
                                 outs, paste.paste_to, paste.boxes, state["region"],
                                 state["scratch"], state["handle"], use_turbo,
                                 not self.accept_jpeg_warnings, status)
        for k in paste.order[start:stop]:
            code = status[k]
            if code == STATUS_NEEDS_PYTHON:
                self._decode_in_python(crops, int(k), int(indices[k]), outs, state)
            elif code in _FAILED or (code == STATUS_WARNING and not self.accept_jpeg_warnings):
                role = describe(int(k)) if describe is not None else ""
                index = int(indices[k])
                raise SampleError(index, images.name, f"cannot decode JPEG{role}: "
                                  f"{self._failure_reason(index, code, state['handle'])}")

    def _failure_reason(self, index: int, code: int, handle: int) -> str:
        """Why the kernel failed sample ``index``: decoding it again with simplejpeg gives the
        message of its first error or warning (the handle's own message may already belong to
        a later sample of the range)."""
        if code in _REASONS:
            return _REASONS[code]
        try:
            jpeg.decode_record(self.images.payload(index))
        except JpegError as err:
            return str(err)
        return libturbojpeg.error_string(handle)

    def _decode_in_python(self, crops: CropParams, k: int, index: int, outs: tuple,
                          state: dict) -> None:
        """Without libturbojpeg 3: simplejpeg (GIL released) decodes the whole JPEG at the DCT
        scale, then the same resize as the kernel, on the same pixels the region decoder
        would have produced (the box divided by the scale's denominator)."""
        boxes, flips = crops.boxes[:, k], crops.decoder_flips[:, k]
        opts = crops.view_opts
        denom = min(dct_denominator(box[2], box[3], out.shape[1], out.shape[2],
                                    int(opt[OPT_MAX_DENOM]))
                    for box, out, opt in zip(boxes, outs, opts))
        rgb = self.decode_jpeg_python(index, denom)
        paste_to, paste_boxes = crops.paste.paste_to, crops.paste.boxes
        for v, (box, flip, out, opt) in enumerate(zip(boxes, flips, outs, opts)):
            j = int(paste_to[k]) if v == 0 else -1
            resize_decoded(rgb, box[0] / denom, box[1] / denom, box[2] / denom, box[3] / denom,
                           out[k], bool(flip), state["scratch"], out[j] if j >= 0 else out[k],
                           paste_boxes[k] if j >= 0 else _EMPTY, bool(opt[OPT_WITHIN_BOX]))

    def decode_jpeg_python(self, index: int, denom: int) -> np.ndarray:
        """Sample ``index``'s whole JPEG decoded by simplejpeg (GIL released) at exactly 1/denom
        scale (each side ceil(side / denom), as libjpeg's DCT scaling), under this backend's
        rule for corrupt data."""
        images = self.images
        height, width = int(images.heights[index]), int(images.widths[index])
        want = (-(-height // denom), -(-width // denom))
        try:
            rgb = jpeg.decode_record(images.payload(index), self.accept_jpeg_warnings, *want)
        except JpegError as err:
            raise SampleError(index, images.name, f"cannot decode JPEG: {err}") from None
        if rgb.shape[:2] != want:
            raise SampleError(index, images.name, f"stored JPEG's size differs from its record: "
                              f"decoded {rgb.shape[1]}x{rgb.shape[0]} at 1/{denom} scale, "
                              f"record {width}x{height}")
        return rgb


#: Backend names -> classes; a new backend registers here.
BACKENDS: dict[str, type] = {"cpu": CPUBackend}


def make_backend(backend: Union[str, ImageBackend], **options: Any) -> ImageBackend:
    """The backend an op names (``options`` go to its constructor), or the instance given."""
    if isinstance(backend, ImageBackend):
        return backend
    cls = BACKENDS.get(backend) if isinstance(backend, str) else None
    if cls is None:
        raise ValueError(f"unknown image backend {backend!r}; known: {', '.join(BACKENDS)}")
    return cls(**options)


__all__ = ["ImageBackend", "CPUBackend", "StoredImages", "BACKENDS", "make_backend"]
