"""Drawing the stored augmentations: each image's NS records, a pure function of (seed, image
index) on the counter-based RNG (``fastdata.rng``), whatever the thread count or the order in
which images are drawn."""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from fastdata.fields.reinforce import record_dtype
from fastdata.ops.crop_params import random_resized_crop_box
from fastdata.rng import (OP_CROP, OP_FLIP, OP_REINFORCE_MIX, PARTNER_OFFSET, beta_draws,
                          make_key, uniform)

# Draw numbers k of the OP_REINFORCE_MIX stream of record (seed, aug, index).  Never renumber.
K_PARTNER = 0        # the partner image, uniform over the other images
K_MIXUP = 1          # mixup at all (u < mixup_p)
K_CUTMIX = 2         # cutmix at all (u < cutmix_p)
K_CY = 3             # cutmix box centre row
K_CX = 4             # cutmix box centre column
K_MIXUP_BETA = 1 << 10    # first draw of mixup's Beta variate (it takes 2 x 128 draws)
K_CUTMIX_BETA = 2 << 10   # first draw of cutmix's Beta variate
assert OP_FLIP == OP_CROP + 1, "_draw_crops draws a crop's flip from op id + 1"


@njit(cache=True, nogil=True)
def _draw_crops(seed, indices, augs, op, heights, widths, boxes, flips):
    """RandomResizedCrop(scale 0.08-1, ratio 3/4-4/3) boxes and p=0.5 flips: record (index, aug)
    draws from key (seed, epoch=aug, index, op) / (seed, aug, index, op + 1)."""
    lo, hi = math.log(3 / 4), math.log(4 / 3)
    for k in range(len(indices)):
        key = make_key(seed, augs[k], indices[k], op)
        b = random_resized_crop_box(key, heights[k], widths[k], 0.08, 1.0, lo, hi)
        boxes[k, 0], boxes[k, 1], boxes[k, 2], boxes[k, 3] = b
        flips[k] = uniform(make_key(seed, augs[k], indices[k], op + 1), 0) < 0.5


@njit(cache=True, nogil=True)
def _record_uniforms(seed, index, num_augs, op, count):
    """float64[num_augs, count]: draws 0 .. count - 1 of key (seed, aug, index, op) per aug."""
    out = np.empty((num_augs, count), dtype=np.float64)
    for a in range(num_augs):
        key = make_key(seed, a, index, op)
        for k in range(count):
            out[a, k] = uniform(key, k)
    return out


class Augmenter:
    """The NS augmentations of each image, a pure function of (seed, image index).

    Crops/flips: fastdata.rng keys (seed, aug number, index, OP_CROP / OP_FLIP); the partner's
    with OP_CROP + PARTNER_OFFSET / OP_FLIP + PARTNER_OFFSET.  Mixing (off unless mixup_p or
    cutmix_p > 0): key (seed, aug number, index, OP_REINFORCE_MIX), draws numbered by the K_*
    constants; per record, mixup with probability mixup_p (lambda ~ Beta(mixup_alpha,
    mixup_alpha) / 2, ml-dr's div_by=2) and independently cutmix with probability cutmix_p
    (lambda ~ Beta(cutmix_alpha, cutmix_alpha), timm's box, lambda corrected to the box area);
    one partner, uniform over the other images."""

    def __init__(self, original: np.ndarray, num_augs: int, top_k: int, output_size: tuple,
                 seed: int = 0, mixup_p: float = 0.0, mixup_alpha: float = 1.0,
                 cutmix_p: float = 0.0, cutmix_alpha: float = 1.0):
        for name, p, alpha in (("mixup", mixup_p, mixup_alpha), ("cutmix", cutmix_p,
                                                                 cutmix_alpha)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name}_p must be in [0, 1], got {p}")
            if p > 0 and not alpha > 0:
                raise ValueError(f"{name}_alpha must be positive, got {alpha}")
        if (mixup_p or cutmix_p) and len(original) < 2:
            raise ValueError("mixing needs at least two images")
        self.original = original
        self.num_augs, self.top_k, self.output_size = num_augs, top_k, output_size
        self.seed = seed
        self.mixup_p, self.mixup_alpha = float(mixup_p), float(mixup_alpha)
        self.cutmix_p, self.cutmix_alpha = float(cutmix_p), float(cutmix_alpha)
        self.dtype = record_dtype(top_k)

    def _crops(self, indices: np.ndarray, augs: np.ndarray, op: int):
        n = len(indices)
        boxes = np.empty((n, 4), np.int64)
        flips = np.empty(n, np.bool_)
        hw = self.original[indices]
        _draw_crops(self.seed, indices, augs, op, np.ascontiguousarray(hw[:, 0]),
                    np.ascontiguousarray(hw[:, 1]), boxes, flips)
        return boxes, flips

    def _betas(self, index: int, alpha: float, k0: int) -> np.ndarray:
        """float64[NS]: Beta(alpha, alpha) of each record of image ``index``, from draws k0 on."""
        keys, alphas = np.array([index], np.int64), np.array([alpha], np.float64)
        return np.array([beta_draws(self.seed, aug, keys, OP_REINFORCE_MIX, alphas, k0)[0]
                         for aug in range(self.num_augs)])

    def records(self, index: int) -> np.ndarray:
        """The NS records of image ``index`` (ids/probs zero)."""
        ns = self.num_augs
        recs = np.zeros(ns, dtype=self.dtype)
        idx = np.full(ns, index, np.int64)
        augs = np.arange(ns, dtype=np.int64)
        recs["box"], recs["flip"] = self._crops(idx, augs, OP_CROP)
        recs["partner"] = -1
        recs["mixup"] = recs["cutmix"] = np.nan
        if not (self.mixup_p or self.cutmix_p):
            return recs
        u = _record_uniforms(self.seed, index, ns, OP_REINFORCE_MIX, K_CX + 1)
        n = len(self.original)
        partner = np.minimum((u[:, K_PARTNER] * (n - 1)).astype(np.int64), n - 2)
        partner += partner >= index
        do_mix = u[:, K_MIXUP] < self.mixup_p
        do_cut = u[:, K_CUTMIX] < self.cutmix_p
        lam_mix = self._betas(index, self.mixup_alpha, K_MIXUP_BETA) / 2 if self.mixup_p \
            else np.zeros(ns)
        lam_cut = self._betas(index, self.cutmix_alpha, K_CUTMIX_BETA) if self.cutmix_p \
            else np.zeros(ns)
        h, w = self.output_size
        cut_h = (h * np.sqrt(1 - lam_cut)).astype(np.int64)
        cut_w = (w * np.sqrt(1 - lam_cut)).astype(np.int64)
        cy, cx = (u[:, K_CY] * h).astype(np.int64), (u[:, K_CX] * w).astype(np.int64)
        r1, r2 = np.clip(cy - cut_h // 2, 0, h), np.clip(cy + cut_h // 2, 0, h)
        c1, c2 = np.clip(cx - cut_w // 2, 0, w), np.clip(cx + cut_w // 2, 0, w)
        lam_cut = 1 - (r2 - r1) * (c2 - c1) / (h * w)
        mixed = do_mix | do_cut
        pboxes, pflips = self._crops(partner, augs, OP_CROP + PARTNER_OFFSET)
        recs["partner"] = np.where(mixed, partner, -1)
        recs["partner_box"] = np.where(mixed[:, None], pboxes, 0)
        recs["partner_flip"] = mixed & pflips
        recs["mixup"] = np.where(do_mix, lam_mix, np.nan)
        recs["cutmix"] = np.where(do_cut, lam_cut, np.nan)
        recs["cutmix_box"] = np.where(do_cut[:, None], np.stack([r1, c1, r2, c2], 1), 0)
        return recs
