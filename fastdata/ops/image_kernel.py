"""The per-sample image kernel: decode the box's region at the right DCT scale, resize, flip,
and (for a CutMix planned before decoding) write the pasted region straight into the partner.

Runs in the loader's worker threads with no GIL.  Every pointer, size and image dimension it is
given was validated by the Reader when the file was opened; the JPEG's own header is checked
against the record before anything is decoded.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .. import libturbojpeg
from ..libturbojpeg import MCU_WIDTH, decode_region, read_header, scaled
from .resample import resize_crop_paste_into

STATUS_OK = 0
STATUS_WARNING = 1          # libjpeg decoded corrupt data as best it could (accepted, as FFCV)
STATUS_ERROR = -1
STATUS_MISMATCH = -2        # the JPEG's size is not the one its record says
STATUS_NEEDS_PYTHON = -3    # JPEG, but no libturbojpeg 3 here: decoded by the Python fallback

MODE_JPG = 0


@njit(cache=True, nogil=True, inline="always")
def _denominator(box_h: int, box_w: int, out_h: int, out_w: int) -> int:
    """The largest DCT scale-down (8, 4, 2 or 1) that still leaves the box >= the output."""
    for denom in (8, 4, 2):
        if box_h // denom >= out_h and box_w // denom >= out_w:
            return denom
    return 1


@njit(cache=True, nogil=True)
def resize_decoded(image: np.ndarray, top: float, left: float, height: float, width: float,
                   dst: np.ndarray, flip: bool, scratch: np.ndarray, paste_dst: np.ndarray,
                   paste_box: np.ndarray) -> None:
    """Resize the box of an already decoded H x W x 3 image into dst; output region
    ``paste_box`` (y0, y1, x0, x1; empty for none) goes to ``paste_dst`` instead."""
    resize_crop_paste_into(image, top, left, height, width, dst, flip, scratch, paste_dst,
                           paste_box[0], paste_box[1], paste_box[2], paste_box[3])


@njit(cache=True, nogil=True, inline="always")
def _resize_view(image: np.ndarray, top: float, left: float, height: float, width: float,
                 outs: tuple, v: int, k: int, flip: bool, scratch: np.ndarray,
                 paste_to: np.ndarray, paste_boxes: np.ndarray) -> None:
    """View v of sample k into outs[v][k]; view 0's paste region into outs[0][paste_to[k]]."""
    out = outs[v]
    j = paste_to[k] if v == 0 else -1
    if j < 0:
        resize_crop_paste_into(image, top, left, height, width, out[k], flip, scratch, out[k],
                               0, 0, 0, 0)
    else:
        resize_crop_paste_into(image, top, left, height, width, out[k], flip, scratch, out[j],
                               paste_boxes[k, 0], paste_boxes[k, 1], paste_boxes[k, 2],
                               paste_boxes[k, 3])


@njit(cache=True, nogil=True)
def _resize_raw(data: np.ndarray, ptr: int, size: int, height: int, width: int,
                boxes: np.ndarray, flips: np.ndarray, k: int, outs: tuple,
                scratch: np.ndarray, paste_to: np.ndarray, paste_boxes: np.ndarray) -> None:
    """Every view of raw sample k, read in place from the file."""
    image = data[ptr:ptr + size].reshape((height, width, 3))
    for v in range(len(outs)):
        _resize_view(image, float(boxes[v, k, 0]), float(boxes[v, k, 1]),
                     float(boxes[v, k, 2]), float(boxes[v, k, 3]), outs, v, k,
                     flips[v, k] != 0, scratch, paste_to, paste_boxes)


@njit(cache=True, nogil=True)
def decode_range_raw_only(data: np.ndarray, modes: np.ndarray, ptrs: np.ndarray,
                          sizes: np.ndarray, widths: np.ndarray, heights: np.ndarray,
                          indices: np.ndarray, order: np.ndarray, boxes: np.ndarray,
                          flips: np.ndarray, start: int, stop: int, outs: tuple,
                          paste_to: np.ndarray, paste_boxes: np.ndarray, region: np.ndarray,
                          scratch: np.ndarray, handle: int, use_turbo: bool,
                          status: np.ndarray) -> None:
    """decode_range without libturbojpeg 3 (which this function must not reference: its symbols
    are unresolved where the library is missing): raw samples here, JPEGs marked for the Python
    fallback."""
    for t in range(start, stop):
        k = order[t]
        index = indices[k]
        if modes[index] == MODE_JPG:
            status[k] = STATUS_NEEDS_PYTHON
        else:
            status[k] = STATUS_OK
            _resize_raw(data, ptrs[index], sizes[index], heights[index], widths[index], boxes,
                        flips, k, outs, scratch, paste_to, paste_boxes)


def decode_kernel():
    """The kernel for this platform: with libturbojpeg 3's region decoding, or without."""
    return decode_range if libturbojpeg.AVAILABLE else decode_range_raw_only


@njit(cache=True, nogil=True)
def decode_range(data: np.ndarray, modes: np.ndarray, ptrs: np.ndarray, sizes: np.ndarray,
                 widths: np.ndarray, heights: np.ndarray, indices: np.ndarray, order: np.ndarray,
                 boxes: np.ndarray, flips: np.ndarray, start: int, stop: int, outs: tuple,
                 paste_to: np.ndarray, paste_boxes: np.ndarray, region: np.ndarray,
                 scratch: np.ndarray, handle: int, use_turbo: bool, status: np.ndarray) -> None:
    """Decode the batch positions order[start:stop]: position k is sample indices[k], into
    outs[v][k] for each view v; status[k] says how it went.

    boxes[v, k] = (top, left, height, width) in stored pixels and flips[v, k] for view v of
    position k.  paste_to[k] >= 0 sends view 0's output region paste_boxes[k] = (y0, y1, x0,
    x1) to outs[0][paste_to[k]] instead (a CutMix planned before decoding); -1: no paste.
    A JPEG is decoded once per sample, over the union of its views' boxes, at the smallest DCT
    scale that still leaves every view's box at least its output size."""
    views = len(outs)
    info = np.zeros(3, dtype=np.int32)
    for t in range(start, stop):
        k = order[t]
        index = indices[k]
        ptr, size = ptrs[index], sizes[index]
        height, width = heights[index], widths[index]
        status[k] = STATUS_OK
        if modes[index] != MODE_JPG:
            _resize_raw(data, ptr, size, height, width, boxes, flips, k, outs, scratch, paste_to,
                        paste_boxes)
            continue
        if not use_turbo:
            status[k] = STATUS_NEEDS_PYTHON
            continue
        src = data[ptr:ptr + size]
        if read_header(handle, src, info) != 0:
            status[k] = STATUS_ERROR
            continue
        if info[0] != width or info[1] != height:
            status[k] = STATUS_MISMATCH
            continue
        denom = 8
        top, left, bottom, right = height, width, 0, 0
        for v in range(views):
            box_top, box_left, box_h, box_w = boxes[v, k, 0], boxes[v, k, 1], boxes[v, k, 2], \
                boxes[v, k, 3]
            denom = min(denom, _denominator(box_h, box_w, outs[v].shape[1], outs[v].shape[2]))
            top, left = min(top, box_top), min(left, box_left)
            bottom, right = max(bottom, box_top + box_h), max(right, box_left + box_w)
        full_w, full_h = scaled(width, denom), scaled(height, denom)
        # The union box in scaled pixels, widened to whole pixels; the left edge moves down to
        # an iMCU boundary, as region decoding requires (unknown subsampling: whole rows).
        y0 = top // denom
        y1 = min(-(-bottom // denom), full_h)
        x1 = min(-(-right // denom), full_w)
        if info[2] >= 0 and info[2] < len(MCU_WIDTH):
            mcu = max(MCU_WIDTH[info[2]] // denom, 1)
            x0 = (left // denom) // mcu * mcu
        else:
            x0, x1 = 0, full_w
        region_h, region_w = y1 - y0, x1 - x0
        pixels = region[:region_h * region_w * 3].reshape((region_h, region_w, 3))
        result = decode_region(handle, src, denom, x0, y0, region_w, region_h, pixels)
        if result < 0:
            status[k] = STATUS_ERROR
            continue
        status[k] = result
        for v in range(views):
            _resize_view(pixels, boxes[v, k, 0] / denom - y0, boxes[v, k, 1] / denom - x0,
                         boxes[v, k, 2] / denom, boxes[v, k, 3] / denom, outs, v, k,
                         flips[v, k] != 0, scratch, paste_to, paste_boxes)
