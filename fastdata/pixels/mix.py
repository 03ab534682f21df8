"""Pixel mixing kernels (Mixup, CutMix, the replay of stored mixes), on numpy arrays only.

Batches are [B, H, W, C] (or [B, C*H*W] rows in memory order); partners are rows i and B-1-i
(timm's reversed batch) unless given.  CutMix boxes here are (y0, y1, x0, x1) in output pixels,
the convention of timm's ``rand_bbox`` that the Mixup op keeps (``fastdata.pixels.boxes`` converts
to and from the (top, left, height, width) of crop boxes).  Numba, no GIL, no torch.
"""
from __future__ import annotations

import numpy as np
from numba import njit


# -- Mixup: row i with row B-1-i, both read before either is written -----------------------------

@njit(cache=True, nogil=True, inline="always")
def _blend_u8(x, y, lam, rest):
    """FastCollateMixup's rounding: float32 arithmetic, rounded back to uint8."""
    return np.uint8(np.rint(np.float32(x) * lam + np.float32(y) * rest))


@njit(cache=True, nogil=True, inline="always")
def _blend_same(x, y, lam, rest):
    """Mixup's arithmetic in the images' own dtype."""
    return x * lam + y * rest


@njit(cache=True, nogil=True)
def _mix_pairs(flat: np.ndarray, lam: np.ndarray, rest: np.ndarray, rows: np.ndarray,
               blend) -> None:
    """Rows i and B-1-i, each blended with the other (both read before either is written) where
    rows[] says so.  ``blend`` is a compiled function: each one gets its own specialised loop."""
    size, n = flat.shape
    for i in range(size // 2):
        j = size - 1 - i
        li, ri, lj, rj = lam[i], rest[i], lam[j], rest[j]
        a, b = flat[i], flat[j]
        if rows[i] and rows[j]:
            for k in range(n):
                u, w = a[k], b[k]
                a[k] = blend(u, w, li, ri)
                b[k] = blend(w, u, lj, rj)
        elif rows[i]:
            for k in range(n):
                a[k] = blend(a[k], b[k], li, ri)
        elif rows[j]:
            for k in range(n):
                b[k] = blend(b[k], a[k], lj, rj)


def mix_pairs_u8(flat: np.ndarray, lam: np.ndarray, rest: np.ndarray, rows: np.ndarray) -> None:
    """uint8 rows: rint(float32(x_i) * lam_i + float32(x_j) * rest_i) (FastCollateMixup)."""
    _mix_pairs(flat, lam, rest, rows, _blend_u8)


def mix_pairs_float(flat: np.ndarray, lam: np.ndarray, rest: np.ndarray,
                    rows: np.ndarray) -> None:
    """float rows, in their own dtype: x_i * lam_i + x_j * rest_i (Mixup)."""
    _mix_pairs(flat, lam, rest, rows, _blend_same)


# -- CutMix: box regions moved between rows ------------------------------------------------------

@njit(cache=True, nogil=True)
def move_patches_strided(img: np.ndarray, rows: np.ndarray, sources: np.ndarray,
                         boxes: np.ndarray, patches: np.ndarray, offsets: np.ndarray,
                         take: bool) -> None:
    """take: patches[offsets[t]:offsets[t + 1]] = img[sources[t]] over the box of row rows[t];
    else paste each patch into img[rows[t]] over the same box.  img is [B, H, W, C]."""
    channels = img.shape[3]
    for t in range(len(rows)):
        i = rows[t]
        k = sources[t] if take else i
        y0, y1, x0, x1 = boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3]
        o = offsets[t]
        for y in range(y0, y1):
            for x in range(x0, x1):
                for c in range(channels):
                    if take:
                        patches[o] = img[k, y, x, c]
                    else:
                        img[k, y, x, c] = patches[o]
                    o += 1


@njit(cache=True, nogil=True)
def move_patches_dense(flat: np.ndarray, shape: np.ndarray, rows: np.ndarray,
                       sources: np.ndarray, boxes: np.ndarray, patches: np.ndarray,
                       offsets: np.ndarray, take: bool) -> None:
    """move_patches_strided for a C-contiguous [B, H, W, C] batch seen as 1-d: a box row is
    one run."""
    height, width, channels = shape[1], shape[2], shape[3]
    for t in range(len(rows)):
        i = rows[t]
        k = sources[t] if take else i
        y0, y1, x0, x1 = boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3]
        run = (x1 - x0) * channels
        o = offsets[t]
        for y in range(y0, y1):
            base = ((k * height + y) * width + x0) * channels
            if take:                 # slice copies: Numba lowers them to memcpy-speed loops
                patches[o:o + run] = flat[base:base + run]
            else:
                flat[base:base + run] = patches[o:o + run]
            o += run


@njit(cache=True, nogil=True)
def swap_boxes(flat: np.ndarray, shape: np.ndarray, firsts: np.ndarray, boxes: np.ndarray,
               tmp: np.ndarray) -> None:
    """CutMix for partners i and B-1-i sharing one box (batch and pair modes): swap the two box
    regions in place, a row-run at a time through ``tmp`` (which stays in cache), instead of
    copying every patch out and back: half the memory traffic."""
    batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
    for t in range(len(firsts)):
        i = firsts[t]
        j = batch - 1 - i
        y0, y1, x0, x1 = boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3]
        run = (x1 - x0) * channels
        for y in range(y0, y1):
            a = ((i * height + y) * width + x0) * channels
            b = ((j * height + y) * width + x0) * channels
            tmp[:run] = flat[a:a + run]
            flat[a:a + run] = flat[b:b + run]
            flat[b:b + run] = tmp[:run]


def move_patches(nhwc: np.ndarray, rows: np.ndarray, sources: np.ndarray, boxes: np.ndarray,
                 patches: np.ndarray, offsets: np.ndarray, take: bool) -> None:
    """take: copy row sources[t]'s box region (the box of row rows[t]) into
    patches[offsets[t]:offsets[t + 1]]; else paste patch t into row rows[t] over that box."""
    if nhwc.flags.c_contiguous:
        move_patches_dense(nhwc.reshape(-1), np.array(nhwc.shape, dtype=np.int64), rows,
                           sources, boxes, patches, offsets, take)
    else:
        move_patches_strided(nhwc, rows, sources, boxes, patches, offsets, take)


# -- replayed mixes (ml-dr records) ---------------------------------------------------------------

@njit(cache=True, nogil=True)
def mix_range(out: np.ndarray, partner: np.ndarray, positions: np.ndarray, mixup: np.ndarray,
              cutmix: np.ndarray, cut_boxes: np.ndarray) -> None:
    """For m in range(len(positions)): mix partner[m] into out[positions[m]]: mixup
    (floor(lam x + (1 - lam) x2 + 0.5), float64) when mixup[m] is not NaN, then cutmix (rows
    r1:r2, columns c1:c2 copied) when cutmix[m] is not NaN.  out and partner are C-contiguous
    [n, H, W, 3] uint8."""
    for m in range(len(positions)):
        dst = out[positions[m]]
        src = partner[m]
        lam = mixup[m]
        if not np.isnan(lam):
            blend(dst.reshape(-1), src.reshape(-1), lam, 1.0 - lam)
        if not np.isnan(cutmix[m]):
            row = dst.shape[1] * 3
            a, b = cut_boxes[m, 1] * 3, cut_boxes[m, 3] * 3
            flat_dst, flat_src = dst.reshape(-1), src.reshape(-1)
            for y in range(cut_boxes[m, 0], cut_boxes[m, 2]):
                flat_dst[y * row + a:y * row + b] = flat_src[y * row + a:y * row + b]


@njit(cache=True, nogil=True)
def blend(dst: np.ndarray, src: np.ndarray, lam: float, rest: float) -> None:
    """dst = floor(lam * dst + rest * src + 0.5) in float64, over flat uint8 arrays: one flat
    loop with unsigned indices, which vectorises (nested y, x, c loops ran 7x slower)."""
    for t in range(np.uint64(dst.shape[0])):
        v = lam * np.float64(dst[t]) + rest * np.float64(src[t])
        dst[t] = np.uint8(np.floor(v + 0.5))
