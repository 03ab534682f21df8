"""OneHot and Mixup / CutMix batch ops: timm's formulas, the three modes, layouts and dtypes,
parameter statistics, determinism and exact resume through the Loader, dense targets and the
region_target hook, and CutMix pasted while decoding."""
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fastdata import DatasetWriter, IntField, Loader, RGBImageField  # noqa: E402
from fastdata.demo import synthetic_photo  # noqa: E402
from fastdata.ops import (IntDecoder, MultiView, Normalize, RandomHorizontalFlip,  # noqa: E402
                          RandomResizedCrop, ToTensor, ToTorchImage)
from fastdata.ops.base import BatchContext, BatchOp  # noqa: E402
from fastdata.ops.mix import Mixup, OneHot  # noqa: E402
from fastdata.rng import OP_MIX_BATCH, beta_draws  # noqa: E402

C = 10
NAMES = ("image", "label")


def ctx_for(batch=0, epoch=0, seed=0, size=8, indices=None):
    idx = np.arange(100 * batch, 100 * batch + size, dtype=np.int64) if indices is None \
        else np.asarray(indices, dtype=np.int64)
    return BatchContext(indices=idx, epoch=epoch, seed=seed, slot=0, batch=batch, names=NAMES)


def images(size=8, h=24, w=20, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (size, 3, h, w), generator=g, dtype=torch.uint8)
    return x if dtype == torch.uint8 else x.to(dtype) / 255


def labels(size=8, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, C, size))


# -- timm's formulas, written out ----------------------------------------------------------------

def timm_one_hot(y, eps, num_classes=C):
    off = eps / num_classes
    on = 1.0 - eps + off
    return torch.full((len(y), num_classes), off).scatter_(1, y.long().view(-1, 1), on)


def timm_target(y, lam, eps, num_classes=C):
    """mixup_target: lam * onehot(y) + (1 - lam) * onehot(flip(y)); lam a float or [B, 1]."""
    y1 = timm_one_hot(y, eps, num_classes)
    return y1 * lam + y1.flip(0) * (1.0 - lam)


def expected_pixels(x0, p, mode):
    """The mixed batch from the unmixed one and the recorded parameters, row by row as timm
    (float) or FastCollateMixup (uint8) compute it."""
    out = x0.clone()
    size = len(x0)
    lam = p["lam"]
    for i in range(size):
        j = size - 1 - i
        assert p["partner"][i] == j
        mixed = p["mixed"] if mode == "batch" else p["mixed"][i]
        cut = p["use_cutmix"] if mode == "batch" else p["use_cutmix"][i]
        if not mixed:
            continue
        if cut:
            y0, y1, x0_, x1 = p["boxes"][i].tolist()
            out[i, :, y0:y1, x0_:x1] = x0[j, :, y0:y1, x0_:x1]
        else:
            if mode == "batch":
                a, b = x0[i:i + 1].float() if x0.dtype == torch.uint8 else x0[i:i + 1], \
                    x0[j:j + 1].float() if x0.dtype == torch.uint8 else x0[j:j + 1]
                new = a * lam + b * (1.0 - lam)
            else:
                li = lam[i].reshape(())              # float32, as timm's lam_batch[i]
                a = x0[i].float() if x0.dtype == torch.uint8 else x0[i]
                b = x0[j].float() if x0.dtype == torch.uint8 else x0[j]
                new = a * li + b * (1 - li)
            if x0.dtype == torch.uint8:
                new = new.round()
            out[i] = new.reshape(out[i].shape).to(x0.dtype)
    return out


def check_box_and_lam(p, i, h, w, correct_lam=True):
    y0, y1, x0, x1 = p["boxes"][i].tolist()
    assert 0 <= y0 <= y1 <= h and 0 <= x0 <= x1 <= w          # fully inside the image
    lam = p["lam"] if isinstance(p["lam"], float) else float(p["lam"][i])
    if correct_lam:
        assert lam == pytest.approx(1 - (y1 - y0) * (x1 - x0) / (h * w), abs=1e-6)


def run(op, x, y, ctx):
    out = op((x, y), ctx)
    return out[0], out[1], vars(ctx.mix)


def find_batch(op, want, size=8, h=24, w=20, **ctx_kwargs):
    """The first batch number whose drawn parameters satisfy ``want``."""
    for b in range(500):
        p = vars(op.draw(ctx_for(b, size=size, **ctx_kwargs), size, h, w))
        if want(p):
            return b
    raise AssertionError("no such batch in 500 draws")


# -- OneHot --------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(8,), (8, 1)])
def test_one_hot_matches_timm_values(shape):
    y = labels().view(shape)
    (t,) = OneHot(C, label_smoothing=0.1)((y,), BatchContext(np.arange(8), 0, 0, 0,
                                                            names=("label",)))
    assert t.dtype == torch.float32 and t.shape == (8, C)
    assert torch.equal(t, timm_one_hot(y.view(-1), 0.1))
    assert torch.allclose(t.sum(1), torch.ones(8)) and (t > 0).all()
    assert torch.equal(OneHot(C)(y, None), timm_one_hot(y.view(-1), 0.0))   # as a field op


def test_one_hot_smooths_dense_targets_and_checks_range():
    dense = torch.softmax(torch.randn(8, C), 1)
    (t,) = OneHot(C, 0.2)((dense,), BatchContext(np.arange(8), 0, 0, 0, names=("label",)))
    assert torch.allclose(t, dense * 0.8 + 0.2 / C)
    with pytest.raises(ValueError, match="outside"):
        OneHot(C)(torch.tensor([0, C]), None)
    with pytest.raises(KeyError, match="target"):
        OneHot(C, label="target")((dense,), BatchContext(np.arange(8), 0, 0, 0,
                                                         names=("label",)))


# -- batch mode ----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_batch_cutmix_pastes_exactly_the_box(dtype):
    op = Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=C)
    b = find_batch(op, lambda p: p["mixed"][0] and 0 < p["boxes"][0, 1] - p["boxes"][0, 0] < 24
                   and 0 < p["boxes"][0, 3] - p["boxes"][0, 2] < 20)
    x0, y = images(dtype=dtype), labels()
    x, t, p = run(op, x0.clone(), y, ctx_for(b))
    assert p["use_cutmix"] is True and isinstance(p["lam"], float)
    y0, y1, c0, c1 = p["boxes"][0].tolist()
    assert (p["boxes"] == p["boxes"][0]).all()
    inside = torch.zeros(24, 20, dtype=torch.bool)
    inside[y0:y1, c0:c1] = True
    for i in range(8):
        assert torch.equal(x[i][:, inside], x0[7 - i][:, inside])
        assert torch.equal(x[i][:, ~inside], x0[i][:, ~inside])
    check_box_and_lam(p, 0, 24, 20)
    assert torch.equal(t, timm_target(y, p["lam"], 0.1))   # bit for bit
    assert torch.allclose(t.sum(1), torch.ones(8)) and (t >= 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_batch_mixup_pixels_and_targets(dtype):
    op = Mixup(mixup_alpha=1.0, label_smoothing=0.1, num_classes=C)
    x0, y = images(dtype=dtype), labels()
    x, t, p = run(op, x0.clone(), y, ctx_for(3))
    assert p["mixed"] and not p["use_cutmix"] and 0 < p["lam"] < 1
    lam = p["lam"]
    if dtype == torch.uint8:     # FastCollateMixup: float32 mix, rint, back to uint8
        ref = (x0.float() * lam + x0.flip(0).float() * (1.0 - lam)).round().to(torch.uint8)
        assert torch.equal(x, ref)
    else:                        # Mixup: x * lam + flip(x) * (1 - lam) in x's dtype
        assert torch.equal(x, x0 * lam + x0.flip(0) * (1.0 - lam))
    assert torch.equal(x, expected_pixels(x0, p, "batch"))
    assert torch.equal(t, timm_target(y, lam, 0.1))   # bit for bit
    assert torch.allclose(t.sum(1), torch.ones(8)) and (t >= 0).all()
    assert (p["boxes"] == 0).all()


def test_correct_lam_off_keeps_the_drawn_lambda():
    on = Mixup(0.0, 1.0, num_classes=C)
    off = Mixup(0.0, 1.0, num_classes=C, correct_lam=False)
    b = find_batch(on, lambda p: p["mixed"][0] and (p["boxes"][0, 0] == 0 or p["boxes"][0, 2] == 0
                                                     or p["boxes"][0, 1] == 24))  # clipped box
    p_on = vars(on.draw(ctx_for(b), 8, 24, 20))
    p_off = vars(off.draw(ctx_for(b), 8, 24, 20))
    assert (p_on["boxes"] == p_off["boxes"]).all()
    raw = beta_draws(0, 0, np.array([b], dtype=np.int64), OP_MIX_BATCH, np.array([1.0]), 16)[0]
    assert p_off["lam"][0] == raw and p_on["lam"][0] != raw
    y0, y1, x0, x1 = p_on["boxes"][0]
    ratio = math.sqrt(1 - raw)    # timm's rand_bbox: cut sides int(side * sqrt(1 - lam))
    assert y1 - y0 <= int(24 * ratio) and x1 - x0 <= int(20 * ratio)


# -- layouts and devices -------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
def test_layouts_give_the_same_result(mode):
    op = Mixup(0.8, 1.0, mode=mode, num_classes=C)
    base = images(dtype=torch.uint8)
    ref, t_ref, _ = run(op, base.clone(), labels(), ctx_for(5))
    nhwc = base.permute(0, 2, 3, 1).contiguous()
    out, t, _ = run(op, nhwc, labels(), ctx_for(5))           # [B, H, W, C], mixed in place
    assert out is nhwc and torch.equal(out.permute(0, 3, 1, 2), ref)
    channels_last = base.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)  # ToTorchImage's
    assert channels_last.is_contiguous(memory_format=torch.channels_last)
    out, t2, _ = run(op, channels_last, labels(), ctx_for(5))
    assert out is channels_last and torch.equal(out, ref)
    assert torch.equal(t, t_ref) and torch.equal(t2, t_ref)


@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_compiled_and_torch_paths_agree(mode, dtype):
    """The CPU kernels (dense rows) and the torch path (GPU, float16, odd strides) mix alike."""
    op = Mixup(0.8, 1.0, prob=0.9, mode=mode, num_classes=C)
    if mode == "batch":
        wants = [lambda p: p["use_cutmix"][0], lambda p: p["mixed"][0] and not p["use_cutmix"][0]]
    else:
        wants = [lambda p: p["use_cutmix"].any() and (p["mixed"] & ~p["use_cutmix"]).any()]
    for want in wants:
        b = find_batch(op, want, size=16)
        x0 = images(16, dtype=dtype, seed=b)
        dense, _, p = run(op, x0.clone(), labels(16), ctx_for(b, size=16))
        taller = torch.zeros(16, 3, 30, 20, dtype=dtype)
        taller[:, :, 3:27] = x0
        strided = taller[:, :, 3:27]                  # rows not dense: the torch path
        out, _, _ = run(op, strided, labels(16), ctx_for(b, size=16))
        assert torch.equal(dense, out) and torch.equal(dense, expected_pixels(x0, p, mode))
        assert not torch.equal(dense, x0)
        assert (taller[:, :, :3] == 0).all() and (taller[:, :, 27:] == 0).all()   # no spill


@pytest.mark.parametrize("mode", ["batch", "elem"])
def test_half_precision_images(mode):
    op = Mixup(1.0, 0.0, mode=mode, num_classes=C)
    x0 = images(dtype=torch.float16)
    x, t, p = run(op, x0.clone(), labels(), ctx_for(2))
    assert x.dtype == torch.float16 and t.dtype == torch.float32
    assert torch.allclose(x.float(), expected_pixels(x0.float(), p, mode), atol=2e-3)


# -- pair and elem modes -------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["pair", "elem"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_per_element_modes(mode, dtype):
    op = Mixup(0.8, 1.0, prob=0.8, mode=mode, label_smoothing=0.1, num_classes=C)
    size, h, w = 32, 24, 20
    x0, y = images(size, h, w, dtype), labels(size)
    x, t, p = run(op, x0.clone(), y, ctx_for(2, size=size))
    lam, cut, mixed = p["lam"], p["use_cutmix"], p["mixed"]
    assert lam.dtype == torch.float32 and lam.shape == (size,)
    assert cut.any() and (mixed & ~cut).any() and (~mixed).any()   # all three kinds occur
    assert torch.equal(x, expected_pixels(x0, p, mode))
    for i in np.flatnonzero(cut):
        check_box_and_lam(p, i, h, w)
        y0, y1, c0, c1 = p["boxes"][i]
        inside = torch.zeros(h, w, dtype=torch.bool)
        inside[y0:y1, c0:c1] = True
        assert torch.equal(x[i][:, inside], x0[size - 1 - i][:, inside])
        assert torch.equal(x[i][:, ~inside], x0[i][:, ~inside])
    assert (p["boxes"][~cut] == 0).all() and (lam[~torch.from_numpy(mixed)] == 1).all()
    assert torch.equal(t, timm_target(y, lam.view(-1, 1), 0.1))   # bit for bit
    assert torch.allclose(t.sum(1), torch.ones(size)) and (t >= 0).all()
    if mode == "pair":            # both members share lambda, method and box
        assert torch.equal(lam, lam.flip(0)) and (cut == cut[::-1]).all()
        assert (p["boxes"] == p["boxes"][::-1]).all()
    else:                         # keyed by sample index: the same sample mixes the same way
        moved = ctx_for(7, size=size, indices=ctx_for(2, size=size).indices)
        p2 = vars(op.draw(moved, size, h, w))
        assert np.array_equal(p2["lam"], lam.double().numpy()) and (p2["boxes"] == p["boxes"]).all()


def test_cutmix_minmax_boxes():
    op = Mixup(mixup_alpha=0.0, cutmix_alpha=0.0, cutmix_minmax=(0.2, 0.6), correct_lam=False,
               mode="elem", num_classes=C)
    assert op.cutmix_alpha == 1.0
    size, h, w = 200, 50, 40
    x0 = images(size, h, w)
    x, t, p = run(op, x0.clone(), labels(size), ctx_for(1, size=size))
    assert p["use_cutmix"].all()
    b = p["boxes"]
    heights, widths = b[:, 1] - b[:, 0], b[:, 3] - b[:, 2]
    assert heights.min() >= int(h * 0.2) and heights.max() < int(h * 0.6)
    assert widths.min() >= int(w * 0.2) and widths.max() < int(w * 0.6)
    assert (b[:, 0] >= 0).all() and (b[:, 1] <= h).all() and (b[:, 2] >= 0).all() \
        and (b[:, 3] <= w).all()
    for i in range(size):          # minmax forces the area-corrected lambda
        check_box_and_lam(p, i, h, w, correct_lam=True)
    assert torch.equal(x, expected_pixels(x0, p, "elem"))


# -- switching mixing off ------------------------------------------------------------------------

def test_prob_zero_disabled_and_off_epoch_leave_batches_unchanged():
    x0, y = images(), labels()
    for op, ctx in ((Mixup(0.8, 1.0, prob=0.0, num_classes=C), ctx_for(0)),
                    (Mixup(0.8, 1.0, prob=0.0, mode="elem", num_classes=C), ctx_for(0)),
                    (Mixup(0.8, 1.0, off_epoch=3, num_classes=C), ctx_for(0, epoch=3))):
        x, t, p = run(op, x0.clone(), y, ctx)
        assert torch.equal(x, x0) and torch.equal(t, timm_one_hot(y, 0.1))
        assert not np.any(p["mixed"]) and (p["boxes"] == 0).all()
    op = Mixup(0.8, 1.0, num_classes=C)
    x, _, p = run(op, x0.clone(), y, ctx_for(0, epoch=2))
    assert p["mixed"] and not torch.equal(x, x0)
    op.mixup_enabled = False
    x, t, p = run(op, x0.clone(), y, ctx_for(0, epoch=2))
    assert torch.equal(x, x0) and torch.equal(t, timm_one_hot(y, 0.1)) and p["lam"] == 1.0


# -- statistics ----------------------------------------------------------------------------------

def test_switch_prob_share_of_cutmix():
    op = Mixup(0.8, 1.0, switch_prob=0.3, num_classes=C)
    n, x, y = 2000, images(2, 8, 8), labels(2)
    cut = 0
    for b in range(n):
        _, _, p = run(op, x.clone(), y, ctx_for(b, size=2))
        cut += p["use_cutmix"]
    assert abs(cut / n - 0.3) < 4 * math.sqrt(0.3 * 0.7 / n)
    elem = Mixup(0.8, 1.0, switch_prob=0.3, prob=0.6, mode="elem", num_classes=C)
    p = vars(elem.draw(ctx_for(0, size=4000, indices=np.arange(4000)), 4000, 64, 64))
    assert abs(p["mixed"].mean() - 0.6) < 4 * math.sqrt(0.24 / 4000)
    share = p["use_cutmix"][p["mixed"]].mean()
    assert abs(share - 0.3) < 4 * math.sqrt(0.21 / p["mixed"].sum())


def ks_distance(a, b):
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    return np.abs(np.searchsorted(a, grid, "right") / len(a)
                  - np.searchsorted(b, grid, "right") / len(b)).max()


@pytest.mark.parametrize("alpha", [0.2, 0.8, 1.0, 3.0])
def test_lambda_is_beta_distributed(alpha):
    n = 2000
    op = Mixup(mixup_alpha=alpha, mode="elem", num_classes=C)
    lam = vars(op.draw(ctx_for(0, size=n, indices=np.arange(n), seed=11), n, 8, 8))["lam"]
    var = 1 / (4 * (2 * alpha + 1))
    assert abs(lam.mean() - 0.5) < 4 * math.sqrt(var / n)
    assert abs(lam.var() / var - 1) < 0.15
    reference = np.random.default_rng(0).beta(alpha, alpha, 20000)
    assert ks_distance(lam, reference) < 1.95 * math.sqrt((n + 20000) / (n * 20000))
    # batch mode: one lambda per batch, keyed by the batch number
    batch = Mixup(mixup_alpha=alpha, num_classes=C)
    lams = [vars(batch.draw(ctx_for(b, size=2), 2, 8, 8))["lam"][0] for b in range(n)]
    assert ks_distance(np.array(lams), reference) < 1.95 * math.sqrt((n + 20000) / (n * 20000))


# -- determinism, errors, dense targets, the region hook -----------------------------------------

def test_same_seed_same_output_other_seed_differs():
    op = Mixup(0.8, 1.0, mode="elem", num_classes=C)
    x0, y = images(16), labels(16)
    a = run(op, x0.clone(), y, ctx_for(4, size=16, seed=1))
    b = run(Mixup(0.8, 1.0, mode="elem", num_classes=C), x0.clone(), y, ctx_for(4, size=16, seed=1))
    c = run(op, x0.clone(), y, ctx_for(4, size=16, seed=2))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_odd_batch_and_bad_arguments_raise_clearly():
    op = Mixup(num_classes=C)
    with pytest.raises(ValueError, match="even batch size"):
        op((images(7), labels(7)), ctx_for(0, size=7))
    with pytest.raises(ValueError, match="mode"):
        Mixup(mode="half")
    with pytest.raises(ValueError, match="alpha"):
        Mixup(mixup_alpha=0.0, cutmix_alpha=0.0)
    with pytest.raises(ValueError, match="outside"):
        op((images(), torch.full((8,), C)), ctx_for(0))
    with pytest.raises(ValueError, match="dense target"):
        op((images(), torch.rand(8, C + 1)), ctx_for(0))
    with pytest.raises(TypeError, match="batch op"):
        op(images(), ctx_for(0))


@pytest.mark.parametrize("mode", ["batch", "elem"])
def test_dense_targets_are_smoothed_then_mixed(mode):
    op = Mixup(0.8, 1.0, mode=mode, label_smoothing=0.1, num_classes=C)
    dense = torch.softmax(torch.randn(8, C, generator=torch.Generator().manual_seed(0)), 1)
    given = dense.clone()
    b = find_batch(op, lambda p: p["mixed"].all())
    _, t, p = run(op, images(), dense, ctx_for(b))
    assert torch.equal(dense, given)                          # the input target is not touched
    s = dense * 0.9 + 0.1 / C
    lam = p["lam"] if mode == "batch" else p["lam"].view(-1, 1)
    assert torch.equal(t, s * lam + s.flip(0) * (1 - lam))   # torch's arithmetic, bit for bit
    assert torch.allclose(t.sum(1), torch.ones(8)) and (t >= 0).all()
    # without smoothing the input is read in place, never written or handed back
    plain = Mixup(0.8, 1.0, mode=mode, label_smoothing=0.0, num_classes=C)
    _, t0, _ = run(plain, images(), dense, ctx_for(b))
    assert torch.equal(dense, given) and t0.data_ptr() != dense.data_ptr()
    assert torch.equal(t0, dense * lam + dense.flip(0) * (1 - lam))
    # [B, 1] integer labels work too
    _, t, p = run(op, images(), labels().view(-1, 1), ctx_for(b))
    assert torch.equal(t, timm_target(labels(), lam, 0.1))   # bit for bit


@pytest.mark.parametrize("mode", ["batch", "elem"])
def test_region_target_hook(mode):
    calls = []

    def region(ctx, partner, boxes):
        calls.append((partner.copy(), boxes.copy()))
        return timm_one_hot((torch.from_numpy(partner) + 3) % C, 0.0)   # any [B, C] label

    op = Mixup(0.8, 1.0, mode=mode, label_smoothing=0.1, num_classes=C, region_target=region)
    plain = Mixup(0.8, 1.0, mode=mode, label_smoothing=0.1, num_classes=C)
    want = (lambda p: p["use_cutmix"][0] and p["mixed"][0]) if mode == "batch" else \
        (lambda p: p["use_cutmix"].any() and (p["mixed"] & ~p["use_cutmix"]).any())
    b = find_batch(op, want)
    y = labels()
    _, t, p = run(op, images(), y, ctx_for(b))
    _, t_plain, _ = run(plain, images(), y, ctx_for(b))
    assert len(calls) == 1
    partner, boxes = calls[0]
    assert (partner == np.arange(7, -1, -1)).all() and (boxes == p["boxes"]).all()
    cut = np.broadcast_to(np.asarray(p["use_cutmix"]), (8,))
    lam = torch.full((8,), p["lam"]) if mode == "batch" else p["lam"]
    r = timm_one_hot((torch.from_numpy(partner) + 3) % C, 0.0) * 0.9 + 0.1 / C
    own = timm_one_hot(y, 0.1)
    for i in range(8):
        if cut[i]:
            assert torch.allclose(t[i], lam[i] * own[i] + (1 - lam[i]) * r[i])
        else:
            assert torch.equal(t[i], t_plain[i])
    assert torch.allclose(t.sum(1), torch.ones(8))
    # no CutMix in the batch: the hook is not called
    mixup_only = Mixup(1.0, 0.0, mode=mode, num_classes=C, region_target=region)
    run(mixup_only, images(), y, ctx_for(b))
    assert len(calls) == 1


# -- through the Loader --------------------------------------------------------------------------

N = 48


def write_photos(path, seed, max_side, **image_args):
    """N synthetic photos of random sizes (40 to max_side px a side), label i % C."""
    rng = np.random.default_rng(seed)
    samples = [(synthetic_photo(np.random.default_rng((seed + 1, i)),
                                int(rng.integers(40, max_side)), int(rng.integers(40, max_side))),
                i % C) for i in range(N)]
    DatasetWriter(path, {"image": RGBImageField(**image_args), "label": IntField()},
                  page_size=1 << 21, num_workers=2, progress=False).from_indexed_dataset(samples)
    return path


@pytest.fixture(scope="module")
def beton(tmp_path_factory):
    return write_photos(str(tmp_path_factory.mktemp("mix") / "mix.beton"), 0, 90,
                        write_mode="raw")


class Spy:
    """A batch op that records the mixing parameters of every batch it sees."""

    def __init__(self):
        self.seen = {}

    def __call__(self, batch, ctx):
        self.seen[(ctx.epoch, ctx.batch)] = {k: (v.clone() if isinstance(v, torch.Tensor) else
                                                 np.copy(v) if isinstance(v, np.ndarray) else v)
                                             for k, v in vars(ctx.mix).items()}
        return batch


def mix_loader(path, *ops, normalize=False, **kwargs):
    kwargs.setdefault("batch_size", 8)
    kwargs.setdefault("num_workers", 2)
    kwargs.setdefault("order", "random")
    kwargs.setdefault("seed", 4)
    image = [RandomResizedCrop(32), RandomHorizontalFlip(), ToTensor(), ToTorchImage()]
    if normalize:
        image.append(Normalize())
    ops = [op for op in ops if op is not None]
    return Loader(path, pipelines={"image": image, "label": [IntDecoder(), ToTensor()]},
                  batch_ops=ops, **kwargs)


def epoch_batches(loader):
    return [tuple(t.clone() for t in batch) for batch in loader]


@pytest.mark.parametrize("mode,normalize", [("elem", False), ("batch", True), ("pair", False)])
def test_loader_end_to_end_matches_reference(beton, mode, normalize):
    op = Mixup(0.8, 1.0, mode=mode, num_classes=C)
    # A seed whose epoch has both a CutMix and a Mixup batch (batch mode draws once a batch).
    seed = next(s for s in range(100) if len({bool(vars(op.draw(ctx_for(b, seed=s), 8, 32, 32))
                                                     ["use_cutmix"][0])
                                                for b in range(N // 8)}) == 2)
    plain = epoch_batches(mix_loader(beton, normalize=normalize, seed=seed))
    spy = Spy()
    mixed = epoch_batches(mix_loader(beton, op, spy, normalize=normalize, seed=seed))
    assert len(mixed) == len(plain) == N // 8
    any_cut = any_mix = False
    for b, ((x0, y0), (x, t)) in enumerate(zip(plain, mixed)):
        p = spy.seen[(0, b)]
        assert x.shape == x0.shape and x.dtype == x0.dtype and t.shape == (8, C)
        assert torch.equal(x, expected_pixels(x0, p, mode))
        lam = p["lam"] if mode == "batch" else p["lam"].view(-1, 1)
        assert torch.equal(t, timm_target(y0.view(-1), lam, 0.1))   # bit for bit
        any_cut |= bool(np.any(p["use_cutmix"]))
        any_mix |= bool(np.any(np.asarray(p["mixed"]) & ~np.asarray(p["use_cutmix"])))
    assert any_cut and any_mix


def test_loader_deterministic_across_threads_and_resume_exact(beton):
    def make(**kw):
        return mix_loader(beton, Mixup(0.8, 1.0, mode="elem", num_classes=C), **kw)

    one = epoch_batches(make(num_workers=1, batches_ahead=1))
    two = epoch_batches(make(num_workers=2, batches_ahead=3))
    assert all(torch.equal(a, b) for x, y in zip(one, two) for a, b in zip(x, y))

    loader = make()
    uninterrupted = epoch_batches(loader) + epoch_batches(loader)     # epochs 0 and 1
    first = make()
    list(first)
    it = iter(first)
    taken = [next(it) for _ in range(2)]
    state = first.state_dict()
    assert (state["epoch"], state["batch"]) == (1, 2)
    del it, taken
    resumed = make()
    resumed.load_state_dict(state)
    rest = epoch_batches(resumed)
    expected = uninterrupted[len(loader) + 2:]
    assert len(rest) == len(expected)
    assert all(torch.equal(a, b) for x, y in zip(expected, rest) for a, b in zip(x, y))
    # batch mode too (keyed by the batch number)
    batch_mode = [mix_loader(beton, Mixup(0.8, 1.0, num_classes=C), num_workers=w)
                  for w in (1, 2)]
    a, b = (epoch_batches(ld) for ld in batch_mode)
    assert all(torch.equal(u, v) for x, y in zip(a, b) for u, v in zip(x, y))


def test_loader_odd_batch_size_error(beton):
    loader = mix_loader(beton, Mixup(num_classes=C), batch_size=7)
    with pytest.raises(ValueError, match="even batch size"):
        next(iter(loader))


def test_one_hot_in_the_loader(beton):
    (_, y), = [b for b, _ in zip(epoch_batches(mix_loader(beton)), range(1))]
    loader = mix_loader(beton, OneHot(C, label_smoothing=0.1))
    (_, t), = [b for b, _ in zip(epoch_batches(loader), range(1))]
    assert torch.equal(t, timm_one_hot(y.view(-1), 0.1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
def test_cuda_batches_mix_like_cpu_ones(mode):
    op = Mixup(0.8, 1.0, prob=0.9, mode=mode, num_classes=C)
    for b in range(4):
        for dtype in (torch.uint8, torch.float32):
            x0, y = images(16, dtype=dtype, seed=b), labels(16)
            cpu, t_cpu, _ = run(op, x0.clone(), y, ctx_for(b, size=16))
            gpu, t_gpu, _ = run(op, x0.cuda().permute(0, 2, 3, 1).contiguous()
                                .permute(0, 3, 1, 2), y.cuda(), ctx_for(b, size=16))
            assert gpu.is_cuda and t_gpu.is_cuda
            if dtype == torch.uint8:
                assert torch.equal(gpu.cpu(), cpu)
            else:
                assert torch.allclose(gpu.cpu(), cpu, atol=1e-6)
            assert torch.allclose(t_gpu.cpu(), t_cpu, atol=1e-6)


# -- CutMix pasted while decoding ----------------------------------------------------------------

class Identity(BatchOp):
    """Not position-independent: a CutMix after it must move the pixels after decoding."""

    def __call__(self, batch, ctx):
        return batch


class PasteSpy(Spy):
    """Spy that also records whether the decoder was asked to paste."""

    def __call__(self, batch, ctx):
        self.pasted = getattr(self, "pasted", False) or ctx.paste_plan("image") is not None
        return super().__call__(batch, ctx)


@pytest.fixture(scope="module")
def jpeg_beton(tmp_path_factory):
    """Proportion mode (JPEG and raw records) with sizes that need DCT scaling."""
    return write_photos(str(tmp_path_factory.mktemp("mixjpg") / "mixed.beton"), 1, 200,
                        write_mode="proportion", jpeg_quality=90)


@pytest.mark.parametrize("mode", ["batch", "pair"])
def test_cutmix_pasted_while_decoding_equals_cutmix_after(jpeg_beton, mode):
    """Batch and pair modes paste in the decoder; the batches are bit for bit those of the
    swap after decoding (forced by a batch op before Mixup that is not position-independent),
    with flips, JPEG and raw records, and an even last partial batch (48 = 4 x 10 + 8)."""
    kw = dict(batch_size=10, drop_last=False, seed=3)
    make = lambda: Mixup(0.8, 1.0, mode=mode, prob=0.9, num_classes=C)   # noqa: E731
    fused_spy, after_spy = PasteSpy(), PasteSpy()
    fused = epoch_batches(mix_loader(jpeg_beton, make(), fused_spy, **kw))
    after = epoch_batches(mix_loader(jpeg_beton, Identity(), make(), after_spy, **kw))
    assert fused_spy.pasted and not after_spy.pasted
    assert [len(x) for x, _ in fused] == [10, 10, 10, 10, 8]
    cuts = sum(bool(np.any(p["use_cutmix"])) for p in fused_spy.seen.values())
    assert cuts >= 2
    for (x, t), (x2, t2) in zip(fused, after):
        assert torch.equal(x, x2) and torch.equal(t, t2)
    for key, p in fused_spy.seen.items():
        for name, value in p.items():
            other = after_spy.seen[key][name]
            assert (torch.equal(value, other) if isinstance(value, torch.Tensor)
                    else np.array_equal(value, other))


def test_cutmix_not_pasted_in_elem_mode_or_after_moving_ops(jpeg_beton):
    """Elem mode (partners' boxes differ), a multi-view decoder and a position-dependent step
    before Mixup keep the swap after decoding."""
    spy = PasteSpy()
    list(mix_loader(jpeg_beton, Mixup(0.0, 1.0, mode="elem", num_classes=C), spy))
    assert not spy.pasted and spy.seen
    flip_after = Loader(jpeg_beton, batch_size=8, pipelines={
        "image": [RandomResizedCrop(32), ToTensor(), RandomHorizontalFlip(), ToTorchImage()],
        "label": [IntDecoder(), ToTensor()]}, batch_ops=[Mixup(0.0, 1.0, num_classes=C)])
    assert flip_after._pre_decode_ops() == []
    views = Loader(jpeg_beton, batch_size=8, pipelines={
        "image": [MultiView(RandomResizedCrop(32), RandomResizedCrop(16)), ToTensor()],
        "label": [IntDecoder(), ToTensor()]}, batch_ops=[Mixup(0.0, 1.0, num_classes=C)])
    assert views._pre_decode_ops() == []
    plain = mix_loader(jpeg_beton, Mixup(0.0, 1.0, num_classes=C))
    assert [images for _, images in plain._pre_decode_ops()] == [{"image": (32, 32)}]


def test_pasted_cutmix_with_the_python_decoder(jpeg_beton):
    """Without libturbojpeg 3 (``use_libturbojpeg=False``) the simplejpeg path pastes too: same
    batches as the swap after decoding there."""
    def run(ops):
        loader = Loader(jpeg_beton, batch_size=24, order="random", seed=5, pipelines={
            "image": [RandomResizedCrop(40, use_libturbojpeg=False), RandomHorizontalFlip(),
                      ToTensor(), ToTorchImage()], "label": [IntDecoder(), ToTensor()]},
            batch_ops=ops)
        return [x.clone() for x, _ in loader], len(loader._pre_decode)
    fused, n1 = run([Mixup(0.0, 1.0, mode="pair", num_classes=10)])
    after, n2 = run([Identity(), Mixup(0.0, 1.0, mode="pair", num_classes=10)])
    assert (n1, n2) == (1, 0)
    assert len(fused) == len(after) and all(torch.equal(a, b) for a, b in zip(fused, after))
