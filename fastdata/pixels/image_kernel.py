"""The per-sample image kernel: decode the box's region at the right DCT scale, resize, flip,
and (for a CutMix planned before decoding) write the pasted region straight into the partner.

Runs in the loader's worker threads with no GIL.  Every pointer, size and image dimension it is
given was validated by the Reader when the file was opened; the JPEG's own header is checked
against the record before anything is decoded.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from . import libturbojpeg
from .jpeg import ends_with_eoi, quant_tables_valid
from .libturbojpeg import MCU_WIDTH, decode_region, read_header, scaled
from .resample import resize_crop_paste_into

STATUS_OK = 0
STATUS_WARNING = 1          # libjpeg decoded corrupt data as best it could (FFCV accepts it)
STATUS_ERROR = -1
STATUS_MISMATCH = -2        # the JPEG's size is not the one its record says
STATUS_NEEDS_PYTHON = -3    # JPEG, but no libturbojpeg 3 here: decoded by the Python fallback
STATUS_NO_EOI = -4          # the record does not end with the end-of-image marker: truncated
STATUS_ZERO_QUANT = -5      # a quantisation table with zero entries: decodes to garbage silently

MODE_JPG = 0
# view_opts[v] columns: the largest DCT scale-down view v allows (1: none), and whether its
# filter reads only the box's pixels (resample.py's within_box).
OPT_MAX_DENOM, OPT_WITHIN_BOX = 0, 1
EDGE = 4          # pixels: chroma upsampling reads one chroma sample (up to 4 pixels) beyond


@njit(cache=True, nogil=True, inline="always")
def dct_denominator(box_h: float, box_w: float, out_h: int, out_w: int, max_denom: int) -> int:
    """The largest DCT scale-down (8, 4, 2 or 1, at most max_denom) that still leaves the box
    at least the output's size."""
    for denom in (8, 4, 2):
        if denom <= max_denom and box_h / denom >= out_h and box_w / denom >= out_w:
            return denom
    return 1


@njit(cache=True, nogil=True)
def resize_decoded(image: np.ndarray, top: float, left: float, height: float, width: float,
                   dst: np.ndarray, flip: bool, scratch: np.ndarray, paste_dst: np.ndarray,
                   paste_box: np.ndarray, within_box: bool) -> None:
    """Resize the box of an already decoded H x W x 3 image into dst; output region
    ``paste_box`` (y0, y1, x0, x1; empty for none) goes to ``paste_dst`` instead."""
    resize_crop_paste_into(image, top, left, height, width, dst, flip, scratch, paste_dst,
                           paste_box[0], paste_box[1], paste_box[2], paste_box[3], within_box)


@njit(cache=True, nogil=True, inline="always")
def _resize_view(image: np.ndarray, top: float, left: float, height: float, width: float,
                 outs: tuple, v: int, k: int, flip: bool, scratch: np.ndarray,
                 paste_to: np.ndarray, paste_boxes: np.ndarray, within_box: bool) -> None:
    """View v of sample k into outs[v][k]; view 0's paste region into outs[0][paste_to[k]]."""
    out = outs[v]
    j = paste_to[k] if v == 0 else -1
    if j < 0:
        resize_crop_paste_into(image, top, left, height, width, out[k], flip, scratch, out[k],
                               0, 0, 0, 0, within_box)
    else:
        resize_crop_paste_into(image, top, left, height, width, out[k], flip, scratch, out[j],
                               paste_boxes[k, 0], paste_boxes[k, 1], paste_boxes[k, 2],
                               paste_boxes[k, 3], within_box)


@njit(cache=True, nogil=True)
def _resize_raw(data: np.ndarray, ptr: int, size: int, height: int, width: int,
                boxes: np.ndarray, flips: np.ndarray, view_opts: np.ndarray, k: int,
                outs: tuple, scratch: np.ndarray, paste_to: np.ndarray,
                paste_boxes: np.ndarray) -> None:
    """Every view of raw sample k, read in place from the file."""
    image = data[ptr:ptr + size].reshape((height, width, 3))
    for v in range(len(outs)):
        _resize_view(image, boxes[v, k, 0], boxes[v, k, 1], boxes[v, k, 2], boxes[v, k, 3],
                     outs, v, k, flips[v, k] != 0, scratch, paste_to, paste_boxes,
                     view_opts[v, OPT_WITHIN_BOX] != 0)


@njit(cache=True, nogil=True)
def decode_range_raw_only(data: np.ndarray, modes: np.ndarray, ptrs: np.ndarray,
                          sizes: np.ndarray, widths: np.ndarray, heights: np.ndarray,
                          indices: np.ndarray, order: np.ndarray, boxes: np.ndarray,
                          flips: np.ndarray, view_opts: np.ndarray, start: int, stop: int,
                          outs: tuple, paste_to: np.ndarray, paste_boxes: np.ndarray,
                          region: np.ndarray, scratch: np.ndarray, handle: int,
                          use_turbo: bool, strict: bool, status: np.ndarray) -> None:
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
                        flips, view_opts, k, outs, scratch, paste_to, paste_boxes)


def decode_kernel(use_turbo: bool = True):
    """The kernel: with libturbojpeg 3's region decoding where asked for and available, else
    the one that leaves JPEGs to the Python fallback."""
    return decode_range if use_turbo and libturbojpeg.AVAILABLE else decode_range_raw_only


@njit(cache=True, nogil=True, inline="always")
def _read_margin(box_len: float, out_len: int, within_box: bool) -> int:
    """Scaled pixels the filter may read beyond the box on each side: none within the box,
    else the filter's support plus one for int() rounding."""
    if within_box:
        return 0
    return int(math.ceil(max(box_len / out_len, 1.0))) + 1


@njit(cache=True, nogil=True)
def decode_range(data: np.ndarray, modes: np.ndarray, ptrs: np.ndarray, sizes: np.ndarray,
                 widths: np.ndarray, heights: np.ndarray, indices: np.ndarray, order: np.ndarray,
                 boxes: np.ndarray, flips: np.ndarray, view_opts: np.ndarray, start: int,
                 stop: int, outs: tuple, paste_to: np.ndarray, paste_boxes: np.ndarray,
                 region: np.ndarray, scratch: np.ndarray, handle: int, use_turbo: bool,
                 strict: bool, status: np.ndarray) -> None:
    """Decode the batch positions order[start:stop]: position k is sample indices[k], into
    outs[v][k] for each view v; status[k] says how it went.

    boxes[v, k] = (top, left, height, width) in stored pixels (float64) and flips[v, k] for
    view v of position k; view_opts[v] = (largest DCT scale-down allowed, filter within the
    box).  paste_to[k] >= 0 sends view 0's output region paste_boxes[k] = (y0, y1, x0, x1) to
    outs[0][paste_to[k]] instead (a CutMix planned before decoding); -1: no paste.
    A JPEG is decoded once per sample, over the union of the pixels its views' filters read,
    at the smallest DCT scale that still leaves every view's box at least its output size.
    strict: a JPEG record must end with FF D9 (else STATUS_NO_EOI) and have no zeroed
    quantisation table (else STATUS_ZERO_QUANT); warnings are reported either way."""
    views = len(outs)
    info = np.zeros(3, dtype=np.int32)
    for t in range(start, stop):
        k = order[t]
        index = indices[k]
        ptr, size = ptrs[index], sizes[index]
        height, width = heights[index], widths[index]
        status[k] = STATUS_OK
        if modes[index] != MODE_JPG:
            _resize_raw(data, ptr, size, height, width, boxes, flips, view_opts, k, outs,
                        scratch, paste_to, paste_boxes)
            continue
        if not use_turbo:
            status[k] = STATUS_NEEDS_PYTHON
            continue
        src = data[ptr:ptr + size]
        if strict and not ends_with_eoi(src):
            status[k] = STATUS_NO_EOI
            continue
        if strict and not quant_tables_valid(src):
            status[k] = STATUS_ZERO_QUANT
            continue
        if read_header(handle, src, info) != 0:
            status[k] = STATUS_ERROR
            continue
        if info[0] != width or info[1] != height:
            status[k] = STATUS_MISMATCH
            continue
        denom = 8
        for v in range(views):
            denom = min(denom, dct_denominator(boxes[v, k, 2], boxes[v, k, 3],
                                               outs[v].shape[1], outs[v].shape[2],
                                               view_opts[v, OPT_MAX_DENOM]))
        full_w, full_h = scaled(width, denom), scaled(height, denom)
        # The union, in scaled pixels, of what each view's filter reads: its box widened to
        # whole pixels (and by the filter's reach where it reads outside the box).
        y0, x0, y1, x1 = full_h, full_w, 0, 0
        for v in range(views):
            within = view_opts[v, OPT_WITHIN_BOX] != 0
            box_top, box_left = boxes[v, k, 0] / denom, boxes[v, k, 1] / denom
            box_h, box_w = boxes[v, k, 2] / denom, boxes[v, k, 3] / denom
            my = _read_margin(box_h, outs[v].shape[1], within)
            mx = _read_margin(box_w, outs[v].shape[2], within)
            y0 = min(y0, max(int(math.floor(box_top)) - my, 0))
            x0 = min(x0, max(int(math.floor(box_left)) - mx, 0))
            y1 = max(y1, min(int(math.ceil(box_top + box_h)) + my, full_h))
            x1 = max(x1, min(int(math.ceil(box_left + box_w)) + mx, full_w))
        # libjpeg upsamples chroma from neighbouring samples, which a region decode lacks at
        # its edges: decode EDGE more pixels on each side so the box's pixels are a full
        # decode's.  Region decoding starts on an iMCU column (unknown subsampling: whole rows).
        y0, x0 = max(y0 - EDGE, 0), max(x0 - EDGE, 0)
        y1, x1 = min(y1 + EDGE, full_h), min(x1 + EDGE, full_w)
        if info[2] >= 0 and info[2] < len(MCU_WIDTH):
            mcu = max(MCU_WIDTH[info[2]] // denom, 1)
            x0 = x0 // mcu * mcu
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
                         flips[v, k] != 0, scratch, paste_to, paste_boxes,
                         view_opts[v, OPT_WITHIN_BOX] != 0)
