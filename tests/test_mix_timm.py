"""Mixup / CutMix against timm itself, the version whose semantics fastdata follows (TIMM_VERSION).

fastdata draws its randomness from the counter-based RNG, timm from numpy's global state, so the
tests hand timm fastdata's draws: the lambdas and CutMix flags replace timm's
``_params_per_batch`` / ``_params_per_elem``, and ``np.random.randint`` (the only draw in timm's
``rand_bbox`` / ``rand_bbox_minmax``) answers with the integer fastdata makes of the same uniform.
Everything after the draws is timm's own code: the boxes, the area-corrected lambdas, the mixed
pixels and the targets must then be identical, bit for bit.

timm is a test dependency (``pip install -e '.[test]'``); without it these tests fail, they are
not skipped."""
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from fastdata.ops.base import BatchContext
from fastdata.ops.mix import K_CX, K_CY, K_LEFT, K_TOP, Mixup
from fastdata.rng import draws

try:
    import timm
    from timm.data import mixup as timm_mixup
except ImportError as error:              # reported by every test below, not skipped
    timm, timm_mixup, TIMM_MISSING = None, None, error
else:
    TIMM_MISSING = None

TIMM_VERSION = "1.0.31"        # the timm whose timm/data/mixup.py fastdata's Mixup matches
C = 10
NAMES = ("image", "label")
MINMAX = (0.2, 0.8)


@pytest.fixture
def tm():
    """timm.data.mixup, or a failure that says how to install it."""
    if timm_mixup is None:
        pytest.fail(f"timm is not importable ({TIMM_MISSING}): these tests compare Mixup/CutMix "
                    f"with timm {TIMM_VERSION}; install the test extras: pip install -e '.[test]'")
    return timm_mixup


def ctx_for(batch, size, seed=0, epoch=0):
    return BatchContext(indices=np.arange(100 * batch, 100 * batch + size, dtype=np.int64),
                        epoch=epoch, seed=seed, slot=0, batch=batch, names=NAMES)


def randint_from(u, low, high):
    """The integer fastdata makes of the uniform ``u`` where timm calls
    ``np.random.randint(low, high)``: uniform over [low, high)."""
    assert high > low, f"timm would raise: randint({low}, {high})"
    return int(low + np.floor(u * (high - low)))


@contextmanager
def timm_randint(monkeypatch, uniforms):
    """np.random.randint answers from ``uniforms`` (consumed in order); all must be used."""
    queue = list(uniforms)

    def randint(low, high=None, size=None):
        assert high is not None and size is None      # timm calls randint(low, high, size=None)
        return randint_from(queue.pop(0), low, high)

    with monkeypatch.context() as m:
        m.setattr(timm_mixup.np.random, "randint", randint)
        yield
    assert not queue, f"timm drew {len(uniforms) - len(queue)} of {len(uniforms)} integers"


def box_uniforms(op, keys):
    """The uniforms fastdata's _boxes draws for each key, in the order timm's box function calls
    randint: centre row, centre column (rand_bbox); height, width, top, left (rand_bbox_minmax)."""
    ks = (K_CY, K_CX) if op.cutmix_minmax is None else (K_CY, K_CX, K_TOP, K_LEFT)
    return [draws(0, 0, np.array([key], dtype=np.int64), op._op, k)[0]
            for key in keys for k in ks]


def raw_params(op, ctx, size, h, w):
    """fastdata's draws as timm's _params_per_* would return them: the lambdas before the area
    correction (float32 per element, float64 per batch) and the CutMix flags, for the first
    ``n`` keys (n = 1, B/2 or B by mode)."""
    twin = Mixup(op.mixup_alpha, op.cutmix_alpha, prob=op.mix_prob, switch_prob=op.switch_prob,
                 mode=op.mode, correct_lam=False, num_classes=op.num_classes)
    p = vars(twin.draw(ctx, size, h, w))
    n = len(op._keys(ctx, size))
    lam = p["lam"][:n] if op.mode == "batch" else p["lam"][:n].astype(np.float32)
    return lam, p["use_cutmix"][:n].copy()


def test_timm_is_the_version_the_semantics_follow(tm):
    assert timm.__version__ == TIMM_VERSION, (
        f"these tests were written against timm {TIMM_VERSION}, found {timm.__version__}: check "
        f"timm/data/mixup.py for changes, then update fastdata and TIMM_VERSION together")


@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
@pytest.mark.parametrize("minmax", [None, MINMAX], ids=["rand_bbox", "minmax"])
@pytest.mark.parametrize("h, w", [(1, 1), (2, 3), (5, 4), (7, 7), (24, 20), (31, 17),
                                  (224, 224), (225, 161)])
def test_boxes_and_corrected_lambdas_match_timm(tm, monkeypatch, mode, minmax, h, w):
    """cutmix_bbox_and_lam, fed the same integers: the same box and the same corrected lambda,
    for odd and even sides, boxes clipped at every border and lambdas near 0 and 1."""
    if minmax is not None and int(h * minmax[0]) >= int(h * minmax[1]):
        h, w = h + 2, w + 2            # a side timm's rand_bbox_minmax can draw from
    op = Mixup(0.0, 1.0, cutmix_minmax=minmax, mode=mode, num_classes=C)
    size, compared = 16, 0
    for b in range(40 if mode == "batch" else 8):
        ctx = ctx_for(b, size)
        p = vars(op.draw(ctx, size, h, w))
        lam_raw, cut = raw_params(op, ctx, size, h, w)
        keys = op._keys(ctx, size)
        for i in np.flatnonzero(cut & (lam_raw != 1)):
            lam_in = float(lam_raw[i]) if mode == "batch" else lam_raw[i]   # timm's types
            with timm_randint(monkeypatch, box_uniforms(op, keys[i:i + 1])):
                box, lam = tm.cutmix_bbox_and_lam((3, h, w), lam_in, ratio_minmax=minmax)
            assert tuple(int(c) for c in box) == tuple(p["boxes"][i]), (b, i)
            want = float(lam) if mode == "batch" else float(np.float32(lam))  # lam_batch[i] =
            assert p["lam"][i] == want, (b, i)
            compared += 1
    assert compared >= 30


def timm_params(monkeypatch, timm_op, op, ctx, size, h, w):
    """Make timm's ``timm_op`` draw what fastdata's ``op`` draws for this batch."""
    lam_raw, cut = raw_params(op, ctx, size, h, w)
    if op.mode == "batch":
        monkeypatch.setattr(timm_op, "_params_per_batch",
                            lambda: (float(lam_raw[0]), bool(cut[0])))
    else:
        def per_elem(n):
            assert n == len(lam_raw)
            return lam_raw.copy(), cut.copy()
        monkeypatch.setattr(timm_op, "_params_per_elem", per_elem)
    keys = op._keys(ctx, size)
    return box_uniforms(op, keys[cut & (lam_raw != 1)])


@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
@pytest.mark.parametrize("minmax", [None, MINMAX], ids=["rand_bbox", "minmax"])
def test_batches_match_timm_mixup_and_fast_collate(tm, monkeypatch, mode, minmax):
    """Whole batches: timm's Mixup on float images, FastCollateMixup on uint8 images, and their
    targets (mixup_target, label smoothing 0.1), against fastdata's Mixup."""
    size, h, w = 8, 24, 20
    kwargs = dict(mixup_alpha=0.8, cutmix_alpha=1.0, cutmix_minmax=minmax, prob=0.8,
                  switch_prob=0.5, mode=mode, label_smoothing=0.1, num_classes=C)
    op = Mixup(**kwargs)
    g = torch.Generator().manual_seed(0)
    saw_cutmix = saw_mixup = False
    for b in range(12):
        ctx = ctx_for(b, size)
        x0 = torch.randint(0, 256, (size, 3, h, w), generator=g, dtype=torch.uint8)
        y = torch.randint(0, C, (size,), generator=g)
        p = vars(op.draw(ctx, size, h, w))
        saw_cutmix |= bool((p["use_cutmix"] & p["mixed"]).any())
        saw_mixup |= bool((~p["use_cutmix"] & p["mixed"]).any())

        ours_u8, ours_t_u8 = op((x0.clone(), y.clone()), ctx_for(b, size))
        fast = tm.FastCollateMixup(**kwargs)
        uniforms = timm_params(monkeypatch, fast, op, ctx, size, h, w)
        with timm_randint(monkeypatch, uniforms):
            theirs_u8, theirs_t_u8 = fast([(x0[i].numpy().copy(), int(y[i]))
                                           for i in range(size)])
        assert torch.equal(ours_u8, theirs_u8), b
        assert torch.equal(ours_t_u8, theirs_t_u8), b

        xf = x0.float() / 255
        ours_f, ours_t = op((xf.clone(), y.clone()), ctx_for(b, size))
        mix = tm.Mixup(**kwargs)
        uniforms = timm_params(monkeypatch, mix, op, ctx, size, h, w)
        with timm_randint(monkeypatch, uniforms):
            theirs_f, theirs_t = mix(xf.clone(), y.clone())
        assert torch.equal(ours_f, theirs_f), b
        assert torch.equal(ours_t, theirs_t), b
    assert saw_cutmix and saw_mixup
