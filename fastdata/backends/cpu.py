"""The CPU backend ("cpu", the default): the Numba kernel of ``pixels.image_kernel`` in the
loader's worker threads.  libjpeg-turbo 3's region decoder where installed
(``use_libturbojpeg=True``, and the environment variable ``FASTDATA_NO_LIBTURBOJPEG`` unset), else
simplejpeg decodes the whole JPEG at the DCT scale and the same resize follows.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from ..ops.crops import CropParams
from ..pixels import jpeg, libturbojpeg
from ..pixels.image_kernel import (OPT_MAX_DENOM, OPT_WITHIN_BOX, STATUS_ERROR,
                                   STATUS_MISMATCH, STATUS_NEEDS_PYTHON, STATUS_NO_EOI,
                                   STATUS_WARNING, STATUS_ZERO_QUANT, dct_denominator,
                                   decode_kernel, resize_decoded)
from ..pixels.jpeg import JpegError
from ..pixels.resample import scratch_size
from ..reader import SampleError
from .base import ImageBackend

_EMPTY = np.zeros(4, dtype=np.int64)      # an empty paste region
_REASONS = {STATUS_MISMATCH: "stored JPEG's size differs from its record",
            STATUS_NO_EOI: jpeg.NO_EOI, STATUS_ZERO_QUANT: jpeg.ZERO_QUANT}
_FAILED = (STATUS_ERROR, *_REASONS)


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


__all__ = ["CPUBackend"]
