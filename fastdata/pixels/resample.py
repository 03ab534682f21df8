"""Anti-aliased bilinear crop-and-resize: the resampling kernel of the crop decoders.

``resize_crop_into`` (Numba, nogil, allocation-free: many threads may run it at once, each with its
own ``scratch`` of ``scratch_size(...)`` float32s, e.g. from ``new_scratch``) computes what the
slow float64 oracle ``tests/oracles.py:resize_crop_reference`` computes.

Semantics: PIL's ``Image.resize(size, BILINEAR, box=...)`` (``ImagingResample``), the algorithm of
torchvision's ``resized_crop(..., antialias=True)``. Units are source pixels; pixel ``k`` covers
``[k, k + 1)``, so its centre is ``k + 0.5``. For each axis, with crop start ``b0`` and length
``len`` (floats), output length ``out`` and source side ``in_size``:

    scale       = len / out                 (> 1 when downscaling)
    filterscale = max(scale, 1)             (widens the triangle only when downscaling)
    support     = 1.0 * filterscale
    center_i    = b0 + (i + 0.5) * scale
    xmin_i      = max(int(center_i - support + 0.5), lo)
    xmax_i      = min(int(center_i + support + 0.5), hi)
    weight(k)   = tri((k - center_i + 0.5) / filterscale),  tri(x) = max(0, 1 - |x|),
                  for xmin_i <= k < xmax_i, normalised to sum 1.

The box may be fractional (a JPEG decoded at 1/2 or 1/4 DCT scale maps an integer full-resolution
box to a fractional one) and is clamped to the image. ``[lo, hi)`` is where the filter may read:

- ``within_box=True`` (the crop ops): the box's pixels, ``[floor(b0), ceil(b0 + len))``.  This is
  torchvision's ``resized_crop``, which crops first and resizes the crop, so no pixel outside the
  box ever reaches the output; on an integer box the two compute the same formula.
- ``within_box=False``: the whole source, ``[0, in_size)``, as PIL's ``resize(box=...)``.  This
  is what resizing a whole image and then cutting a window out of it gives (torchvision's
  ``Resize`` + ``CenterCrop``), the window's edge pixels being filtered with their neighbours.

Precision: weights and intermediate are float32 (PIL: 22-bit fixed point and a uint8 intermediate);
outputs are rounded half up. Within 1 level of the oracle; within 1 level of PIL on
photos.

Pass order: the kernel filters vertically first, then horizontally, two output rows at a time. With
a float intermediate both orders give the same result up to float rounding (the filter is separable
and linear), but this one gives the pass that vectorises (weighted sums of whole source rows) the
big ``out_h x crop_w`` share, leaves the gather-like horizontal pass only ``out_h x out_w`` pixels,
and needs two rows of intermediate (L1-resident) instead of an ``in_h x out_w`` image. The reference
keeps PIL's order.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit
from numpy.lib.stride_tricks import as_strided


def _taps(in_len: float, out_len: int) -> int:
    # PIL's bound on filter taps: ceil(support) * 2 + 1.
    return int(math.ceil(max(in_len / out_len, 1.0))) * 2 + 1


def scratch_size(out_h: int, out_w: int, max_in_h: int, max_in_w: int) -> int:
    """Number of float32 elements ``resize_crop_into`` needs to resize any crop of a source image
    of at most ``max_in_h`` x ``max_in_w`` pixels to ``out_h`` x ``out_w``."""
    kh, kw = _taps(max_in_h, out_h), _taps(max_in_w, out_w)
    return out_h * kh + out_w * kw + 2 * (out_h + out_w) + 6 * out_w + 6 * (max_in_w + kw)


def new_scratch(out_h: int, out_w: int, max_in_h: int, max_in_w: int) -> np.ndarray:
    """A scratch buffer for ``resize_crop_into`` (one per thread: the kernel writes to it)."""
    return np.empty(scratch_size(out_h, out_w, max_in_h, max_in_w), np.float32)


@njit(nogil=True, cache=True)
def _axis_coeffs(lo_bound, hi_bound, b0, length, out_len, stride, weights, starts, counts):
    """Fill output i's taps: ``counts[i]`` weights from source index ``starts[i]`` at
    ``weights[i * stride:]`` (zero-padded to ``stride``), reading only source indices in
    [lo_bound, hi_bound). Returns the largest count."""
    scale = length / out_len
    filterscale = max(scale, 1.0)
    support = filterscale
    inv = 1.0 / filterscale
    kmax = 0
    for i in range(out_len):
        center = b0 + (i + 0.5) * scale
        lo = max(int(center - support + 0.5), lo_bound)
        hi = min(int(center + support + 0.5), hi_bound)
        # PIL's window often ends on taps of weight exactly 0 (e.g. with integer boxes); trimming
        # them saves work without changing the sum.
        total = 0.0
        first = -1
        last = -1
        for k in range(lo, hi):
            t = 1.0 - abs((k - center + 0.5) * inv)
            if t > 0.0:
                total += t
                if first < 0:
                    first = k
                last = k
        # The source pixel holding the centre always has weight >= 0.5: first >= 0, total > 0.
        n = last - first + 1
        base = i * stride
        for j in range(stride):
            weights[base + j] = 0.0
        for j in range(n):
            t = 1.0 - abs((first + j - center + 0.5) * inv)
            weights[base + j] = max(t, 0.0) / total
        starts[i] = first
        counts[i] = n
        kmax = max(kmax, n)
    return kmax


@njit(nogil=True, cache=True)
def resize_crop_into(src, y0, x0, h, w, dst, flip, scratch, within_box=True):
    """Resize the box (``y0``, ``x0``, ``h``, ``w``: float64 source pixels) of ``src`` (uint8
    H x W x 3) into ``dst`` (uint8 out_h x out_w x 3), mirrored left-right if ``flip``. Either array
    may be a view (e.g. into a decode or batch buffer) as long as each row's pixels are contiguous.

    ``scratch``: float32, at least ``scratch_size(out_h, out_w, H, W)`` elements, not shared between
    threads running at the same time. ``within_box``: the filter reads only the box's pixels (see
    the module docstring). Allocates nothing and holds no GIL."""
    resize_crop_paste_into(src, y0, x0, h, w, dst, flip, scratch, dst, 0, 0, 0, 0, within_box)


@njit(nogil=True, cache=True)
def resize_crop_paste_into(src, y0, x0, h, w, dst, flip, scratch, paste_dst, py0, py1, px0, px1,
                           within_box):
    """``resize_crop_into``, except that output rows [py0, py1) x columns [px0, px1) (output
    pixels, after the flip) go to ``paste_dst`` (same shape as ``dst``) instead of ``dst``.

    This is CutMix done while decoding: the region of this image that its partner receives is
    written straight into the partner's output, and this image's own copy of the region is left
    for the partner to fill, so no pixel is moved twice.  An empty region writes all to dst."""
    H, W = src.shape[0], src.shape[1]
    out_h, out_w = dst.shape[0], dst.shape[1]
    if src.shape[2] != 3 or dst.shape[2] != 3:
        raise ValueError("src and dst must have 3 channels")
    if (src.strides[2] != 1 or src.strides[1] != 3 or dst.strides[2] != 1
            or dst.strides[1] != 3):
        raise ValueError("src and dst rows must be contiguous")
    # Clamp a box that leaves the image by float rounding (DCT-scaled boxes).
    by1 = min(y0 + h, float(H))
    bx1 = min(x0 + w, float(W))
    by0 = max(y0, 0.0)
    bx0 = max(x0, 0.0)
    bh = by1 - by0
    bw = bx1 - bx0
    if not (bh > 0.0 and bw > 0.0) or out_h < 1 or out_w < 1:
        raise ValueError("empty crop box or output")
    if py1 > py0 and px1 > px0:
        if (paste_dst.shape[0] != out_h or paste_dst.shape[1] != out_w
                or paste_dst.shape[2] != 3 or paste_dst.strides[2] != 1
                or paste_dst.strides[1] != 3):
            raise ValueError("paste_dst must have dst's shape, with contiguous rows")
        if py0 < 0 or px0 < 0 or py1 > out_h or px1 > out_w:
            raise ValueError("paste region outside the output")

    kh = int(math.ceil(max(bh / out_h, 1.0))) * 2 + 1
    kw = int(math.ceil(max(bw / out_w, 1.0))) * 2 + 1
    n3 = out_w * 3
    o_wx = out_h * kh
    o_int = o_wx + out_w * kw
    o_out = o_int + 2 * (out_h + out_w)
    o_tmp = o_out + 2 * n3
    if scratch.shape[0] < o_tmp + 6 * (W + kw):
        raise ValueError("scratch too small: see scratch_size()")
    wy = scratch[0:o_wx]
    wx = scratch[o_wx:o_int]
    ints = scratch[o_int:o_out].view(np.int32)
    ystart = ints[0:out_h]
    ycount = ints[out_h:2 * out_h]
    xstart = ints[2 * out_h:2 * out_h + out_w]
    xcount = ints[2 * out_h + out_w:2 * (out_h + out_w)]
    out_a = scratch[o_out:o_out + n3]
    out_b = scratch[o_out + n3:o_tmp]
    ylo, yhi, xlo, xhi = 0, H, 0, W
    if within_box:
        ylo, yhi = int(math.floor(by0)), min(int(math.ceil(by1)), H)
        xlo, xhi = int(math.floor(bx0)), min(int(math.ceil(bx1)), W)
    _axis_coeffs(ylo, yhi, by0, bh, out_h, kh, wy, ystart, ycount)
    # Horizontal taps are all read with the same count kx (weights are zero-padded past each
    # output's own count), which keeps the innermost loop branch-free.
    kx = _axis_coeffs(xlo, xhi, bx0, bw, out_w, kw, wx, xstart, xcount)

    # Source columns the horizontal pass reads: [xa, xb).
    xa = W
    xb = 0
    for x in range(out_w):
        xa = min(xa, xstart[x])
        xb = max(xb, xstart[x] + xcount[x])
    ca = xa * 3
    cn = (xb - xa) * 3
    # Two intermediate rows, so the horizontal pass can share each weight between two output rows.
    # Taps past column xb have weight 0 but must not read NaN garbage: zero the padding.
    tmp_a = scratch[o_tmp:o_tmp + cn + 3 * kw]
    tmp_b = scratch[o_tmp + cn + 3 * kw:o_tmp + 2 * (cn + 3 * kw)]
    tmp_a[cn:] = 0.0
    tmp_b[cn:] = 0.0
    for x in range(out_w):
        xstart[x] = (xstart[x] - xa) * 3

    for i in range(0, out_h, 2):
        i2 = min(i + 1, out_h - 1)  # odd out_h: the last row is computed twice, harmlessly
        _vertical(src, ystart[i], ycount[i], wy, i * kh, ca, cn, tmp_a)
        _vertical(src, ystart[i2], ycount[i2], wy, i2 * kh, ca, cn, tmp_b)
        _horizontal(tmp_a, tmp_b, xstart, wx, kw, kx, out_a, out_b, flip)
        _store_row(out_a, dst, i, paste_dst, py0, py1, px0, px1)
        _store_row(out_b, dst, i2, paste_dst, py0, py1, px0, px1)


@njit(nogil=True, cache=True, inline="always")
def _store_row(vals, dst, y, paste_dst, py0, py1, px0, px1):
    """Store output row y; its columns [px0, px1) go to paste_dst when py0 <= y < py1."""
    row = _flat_row(dst, y)
    if y < py0 or y >= py1 or px1 <= px0:
        _store(vals, row, 0, row.shape[0])
        return
    a, b = 3 * px0, 3 * px1
    _store(vals, row, 0, a)
    _store(vals, _flat_row(paste_dst, y), a, b)
    _store(vals, row, b, row.shape[0])


@njit(nogil=True, cache=True)
def _flat_row(img, y):
    """Row y of an H x W x 3 uint8 array with contiguous rows, as a 1-D view of W * 3 bytes. Flat
    rows keep the vertical pass and the final store vectorisable for views as for whole arrays."""
    return as_strided(img[y], shape=(img.shape[1] * 3,), strides=(1,))


@njit(nogil=True, cache=True)
def _vertical(src, ys, n, wy, base, ca, cn, tmp):
    """tmp[:cn] = weighted sum of source rows ys..ys+n-1 over flat columns [ca, ca + cn).
    Vectorises."""
    row = _flat_row(src, ys)[ca:ca + cn]
    wv = wy[base]
    for t in range(cn):
        tmp[t] = wv * np.float32(row[t])
    for j in range(1, n):
        row = _flat_row(src, ys + j)[ca:ca + cn]
        wv = wy[base + j]
        for t in range(cn):
            tmp[t] += wv * np.float32(row[t])


@njit(nogil=True, cache=True)
def _horizontal(tmp_a, tmp_b, xstart, wx, kw, kx, out_a, out_b, flip):
    """Horizontal pass of two intermediate rows into two float output rows (plus 0.5, for rounding),
    written mirrored when flipping.

    This gather-like pass does not vectorise. What makes it fast: each weight load serves two
    rows; indices are unsigned (with signed ones Numba emits a negative-index fix-up per load, which
    cost ~2x); and it writes floats to a flat row, leaving the clamp-and-convert to a separate loop
    that vectorises (converting here, pixel by pixel, cost ~25% more)."""
    U = np.uint64
    out_w = out_a.shape[0] // 3
    for x in range(out_w):
        p = U(xstart[x])
        b = U(x * kw)
        a0 = np.float32(0.5)
        a1 = np.float32(0.5)
        a2 = np.float32(0.5)
        b0 = np.float32(0.5)
        b1 = np.float32(0.5)
        b2 = np.float32(0.5)
        for _ in range(kx):
            wv = wx[b]
            a0 += wv * tmp_a[p]
            a1 += wv * tmp_a[p + U(1)]
            a2 += wv * tmp_a[p + U(2)]
            b0 += wv * tmp_b[p]
            b1 += wv * tmp_b[p + U(1)]
            b2 += wv * tmp_b[p + U(2)]
            p += U(3)
            b += U(1)
        d = U(3 * (out_w - 1 - x)) if flip else U(3 * x)
        out_a[d] = a0
        out_a[d + U(1)] = a1
        out_a[d + U(2)] = a2
        out_b[d] = b0
        out_b[d + U(1)] = b1
        out_b[d + U(2)] = b2


@njit(nogil=True, cache=True)
def _store(vals, row, start, stop):
    """row[start:stop] = floor(vals[start:stop]) as uint8: the weights are >= 0 and sum to 1, so
    vals (which include the +0.5) lie in [0.5, 255.5] up to float error; only the top needs
    clamping."""
    top = np.float32(255.0)
    for t in range(np.uint64(start), np.uint64(stop)):    # unsigned: no negative-index fix-up
        row[t] = np.uint8(min(vals[t], top))
