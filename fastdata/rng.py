"""A counter-based random number generator: every draw is a pure function of its key.

A key is (seed, epoch, sample index, op); draw number k of a key is ``uniform(key, k)``.  Nothing
is shared between threads and nothing depends on the order in which samples are processed, so a
run gives the same augmentations bit for bit whatever the number of threads, and resuming at
batch b of epoch e needs no saved generator state.

Beyond uniforms: ``beta_draws`` gives Beta(a, a) variates as G1 / (G1 + G2) from two Gamma(a)
variates (Marsaglia & Tsang's method, with the ``U ** (1/a)`` boost for a < 1, in log space so
small alphas never give 0/0), each from a bounded number of draws of its stream (the fall-back
after GAMMA_ATTEMPTS rejections has probability below 1e-40).

The mixing function is SplitMix64's finaliser (Steele, Lea & Flood 2014), applied once per key
component: it passes BigCrush as a counter-based generator.  The functions are Numba-compiled
(usable inside nopython kernels) and also callable from Python.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_TO_UNIT = 1.0 / 9007199254740992.0   # 2**-53

# Op ids: which random decision a draw is for.  New ops take new ids; never renumber.
OP_ORDER = 1
OP_CROP = 2
OP_FLIP = 3
OP_MIX = 4
OP_REPLAY = 5
OP_MIX_BATCH = 6   # per-batch mixing draws, keyed by batch number (rank-interleaved)
OP_SKIP = 7        # the Loader's replacement for a sample that fails to decode (on_error='skip')
OP_REINFORCE_MIX = 8   # the reinforce writer's mixing of one record: partner, mixup, cutmix
# FFCV's transforms (fastdata.ops.augment, ffcv_mixup): each below 16, so that view v of a
# multi-view pipeline may add VIEW_STRIDE * v without meeting another op's id.
OP_CUTOUT = 9          # Cutout: the square's top and left
OP_TRANSLATE = 10      # RandomTranslate: the shift's rows and columns
OP_BRIGHTNESS = 11     # RandomBrightness: apply, factor
OP_CONTRAST = 12       # RandomContrast: apply, factor
OP_SATURATION = 13     # RandomSaturation: apply, factor
OP_FFCV_MIXUP = 14     # ImageMixup / LabelMixup: a sample's lambda (same_lambda=False)
OP_FFCV_MIXUP_BATCH = 15   # ImageMixup / LabelMixup: the batch's lambda (same_lambda=True),
                           # keyed by batch number (rank-interleaved)
OP_RESIZED_CROP_OF_IMAGES = 16   # FFCV's transforms.RandomResizedCrop: its boxes.  16 + 16v is
                                 # op 0's view-(v+1) id, and there is no op 0: no collision.

# Added to an op id for the same decision about a second image.
PARTNER_OFFSET = 1 << 10   # the reinforce writer's mixing partner: its crop and flip ids plus this
                           # (past every view's ids, see VIEW_STRIDE)

# Offsets of an op id: view v of a multi-view decoder draws its crop and flip from
# OP_CROP + VIEW_STRIDE * v and OP_FLIP + VIEW_STRIDE * v (view 0: the plain ids).
VIEW_STRIDE = 16

GAMMA_ATTEMPTS = 32    # Marsaglia-Tsang tries per Gamma variate (p(accept) > 0.95 each)
GAMMA_SPAN = 128       # >= 1 + 3 * GAMMA_ATTEMPTS draws reserved per Gamma variate


@njit(cache=True, nogil=True, inline="always")
def mix64(x: np.uint64) -> np.uint64:
    """SplitMix64: a bijective, avalanching hash of a 64-bit word."""
    z = x + _GOLDEN
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@njit(cache=True, nogil=True)
def make_key(seed: int, epoch: int, index: int, op: int) -> np.uint64:
    """The stream key of one (seed, epoch, sample index, op)."""
    h = mix64(np.uint64(seed))
    h = mix64(h ^ np.uint64(epoch))
    h = mix64(h ^ np.uint64(index))
    return mix64(h ^ np.uint64(op))


@njit(cache=True, nogil=True, inline="always")
def uniform(key: np.uint64, k: int) -> float:
    """Draw number ``k`` of stream ``key``: a float in [0, 1) with 53 random bits."""
    return float(mix64(key ^ mix64(np.uint64(k))) >> _S11) * _TO_UNIT


@njit(cache=True, nogil=True)
def draw(seed: int, epoch: int, index: int, op: int, k: int) -> float:
    """``uniform(make_key(seed, epoch, index, op), k)`` in one call (handy from Python)."""
    return uniform(make_key(seed, epoch, index, op), k)


@njit(cache=True, nogil=True)
def draws(seed: int, epoch: int, indices: np.ndarray, op: int, k: int) -> np.ndarray:
    """Draw ``k`` of op ``op`` for each sample index in ``indices`` (int64[:]): float64[:]."""
    out = np.empty(len(indices), dtype=np.float64)
    for i in range(len(indices)):
        out[i] = uniform(make_key(seed, epoch, indices[i], op), k)
    return out


@njit(cache=True, nogil=True)
def log_gamma(key: np.uint64, k0: int, a: float) -> float:
    """log of a Gamma(a, 1) variate from draws k0 .. k0 + 3 * GAMMA_ATTEMPTS of stream ``key``."""
    boost = 0.0
    shape = a
    if a < 1.0:        # Gamma(a) = Gamma(a + 1) * U ** (1 / a)
        shape = a + 1.0
        boost = math.log(1.0 - uniform(key, k0)) / a
    d = shape - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    for t in range(GAMMA_ATTEMPTS):
        k = k0 + 1 + 3 * t
        z = math.sqrt(-2.0 * math.log(1.0 - uniform(key, k))) * \
            math.cos(2.0 * math.pi * uniform(key, k + 1))
        v = 1.0 + c * z
        if v <= 0.0:
            continue
        v = v * v * v
        if math.log(1.0 - uniform(key, k + 2)) < 0.5 * z * z + d - d * v + d * math.log(v):
            return math.log(d * v) + boost
    return math.log(d) + boost


@njit(cache=True, nogil=True)
def beta_draws(seed: int, epoch: int, keys: np.ndarray, op: int, alphas: np.ndarray,
               k0: int) -> np.ndarray:
    """float64[n]: a Beta(alphas[i], alphas[i]) variate for each key (int64[n]), a pure function of
    (seed, epoch, keys[i], op) using draws k0 .. k0 + 2 * GAMMA_SPAN of that stream."""
    out = np.empty(len(keys), dtype=np.float64)
    for i in range(len(keys)):
        key = make_key(seed, epoch, keys[i], op)
        a = alphas[i]
        g1 = log_gamma(key, k0, a)
        g2 = log_gamma(key, k0 + GAMMA_SPAN, a)
        out[i] = 1.0 / (1.0 + math.exp(g2 - g1))
    return out
