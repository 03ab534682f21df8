"""FFCV's transforms in fastdata: FFCV's arguments, FFCV's arithmetic, fastdata's RNG.

Offline: each op against a numpy reference of FFCV's code given the op's draws; pipelines
written FFCV's way run; random ops give the same batches whatever ``num_workers``; Mixup's
image and label pipelines agree.  Live (``FASTDATA_FFCV_PYTHON``, see test_ffcv_compat): FFCV
1.0.2's own transform functions, run with numpy (``Compiler.set_enabled(False)``) and with their
random draws replaced by fastdata's, give the same values bit for bit.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fastdata import DatasetWriter, IntField, Loader, RGBImageField  # noqa: E402
from fastdata.ops import (Convert, Cutout, ImageMixup, IntDecoder, LabelMixup,  # noqa: E402
                          MixupToOneHot, ModuleWrapper, NormalizeImage, Poison,
                          RandomBrightness, RandomContrast, RandomHorizontalFlip,
                          RandomSaturation, RandomTranslate, ReplaceLabel,
                          SimpleRGBImageDecoder, Squeeze, ToDevice, ToTensor, ToTorchImage, View)
from fastdata.ops.augment import K_APPLY  # noqa: E402
from fastdata.ops.base import BatchContext  # noqa: E402
from fastdata.ops.ffcv_mixup import mixup_lambdas  # noqa: E402
from fastdata.rng import OP_BRIGHTNESS, OP_CONTRAST, OP_FLIP, OP_SATURATION, draws  # noqa: E402
from test_ffcv_compat import ffcv_python, run_ffcv  # noqa: E402,F401

N, H, W = 24, 12, 16
MEAN = np.array([123.7, 116.3, 103.5])
STD = np.array([58.4, 57.1, 57.4])


def pictures(seed: int = 0, n: int = N) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, H, W, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def beton(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("ffcv_transforms") / "raw.beton")
    DatasetWriter(path, {"image": RGBImageField(write_mode="raw"), "label": IntField()},
                  progress=False).from_indexed_dataset(
        [(img, i % 5) for i, img in enumerate(pictures())])
    return path


def context(indices, seed=7, epoch=0, batch=0) -> BatchContext:
    return BatchContext(indices=np.asarray(indices, dtype=np.int64), epoch=epoch, seed=seed,
                        slot=0, batch=batch)


def epoch_batches(path, pipelines, num_workers, epoch_count=2, seed=5):
    loader = Loader(path, batch_size=8, num_workers=num_workers, order="random", seed=seed,
                    pipelines=pipelines)
    return [[t.clone() for t in batch] for _ in range(epoch_count) for batch in loader]


# -- numpy references of FFCV's code, given the draws ----------------------------------------------

def blend(img1, img2, ratio):       # FFCV's color_jitter.blend
    return (ratio * img1 + (1 - ratio) * img2).clip(0, 255).astype(img1.dtype)


def gray(img):
    r, g, b = img[:, :, 0], img[:, :, 1], img[:, :, 2]
    return (0.2989 * r + 0.587 * g + 0.114 * b).astype(img.dtype)


def color_reference(kind, images, apply, factors):
    out = images.copy()
    for i in range(len(out)):
        if not apply[i]:
            continue
        if kind is RandomBrightness:
            out[i] = blend(out[i], 0, factors[i])
        elif kind is RandomContrast:
            out[i] = blend(out[i], gray(out[i]).mean(), factors[i])
        else:
            out[i] = blend(out[i], np.repeat(gray(out[i])[:, :, None], 3, axis=2), factors[i])
    return out


# -- semantics -------------------------------------------------------------------------------------

def test_cutout_fills_a_square_at_its_drawn_origin():
    images = pictures(1)
    ctx = context(np.arange(100, 100 + N))
    op = Cutout(5, fill=(10, 20, 30))
    origins = op.square_origins(ctx, H, W)
    assert origins[:, 0].min() >= 0 and origins[:, 0].max() <= H - 5
    assert origins[:, 1].min() >= 0 and origins[:, 1].max() <= W - 5
    assert len({tuple(o) for o in origins}) > N // 2      # origins vary by sample
    out = op(torch.from_numpy(images.copy()), ctx).numpy()
    expected = images.copy()
    for i, (top, left) in enumerate(origins):
        expected[i, top:top + 5, left:left + 5] = (10, 20, 30)
    np.testing.assert_array_equal(out, expected)


def test_random_resized_crop_of_images_is_torchvisions_resized_crop_of_its_boxes():
    """FFCV's transforms.RandomResizedCrop (of decoded images): boxes from the counter-based
    RNG within scale/ratio, pixels within 1 level of torchvision's antialiased resized_crop."""
    import torchvision.transforms.v2.functional as tvf
    from fastdata.ops import RandomResizedCropOfImages
    images = pictures(2)
    op = RandomResizedCropOfImages(scale=(0.3, 1.0), ratio=(0.75, 4 / 3), size=12)
    ctx = context(np.arange(N))
    boxes = op.boxes(ctx, H, W)
    out = op(images, ctx)
    assert out.shape == (N, 12, 12, 3) and out.dtype == np.uint8
    area = boxes[:, 2] * boxes[:, 3] / (H * W)
    assert area.min() >= 0.3 - 1e-9 and area.max() <= 1.0 and len({tuple(b) for b in boxes}) > 1
    for k, (top, left, h, w) in enumerate(boxes.astype(int)):
        want = tvf.resized_crop(torch.from_numpy(images[k]).permute(2, 0, 1), top, left, h, w,
                                [12, 12], antialias=True).permute(1, 2, 0).numpy()
        assert np.abs(want.astype(int) - out[k].astype(int)).max() <= 1
    assert np.array_equal(op.boxes(context(np.arange(N)), H, W), boxes)        # keyed, not drawn
    assert not np.array_equal(op.boxes(context(np.arange(N), epoch=1), H, W), boxes)


def test_random_translate_takes_a_window_of_the_padded_image():
    images = pictures(2)
    ctx = context(np.arange(N))
    op = RandomTranslate(3, fill=(1, 2, 3))
    offsets = op.offsets(ctx)
    assert offsets.min() >= 0 and offsets.max() <= 6 and len(np.unique(offsets)) > 3
    out = op(torch.from_numpy(images.copy()), ctx).numpy()
    padded = np.empty((N, H + 6, W + 6, 3), dtype=np.uint8)
    padded[:] = (1, 2, 3)
    padded[:, 3:3 + H, 3:3 + W] = images
    for i, (y, x) in enumerate(offsets):
        np.testing.assert_array_equal(out[i], padded[i, y:y + H, x:x + W])


@pytest.mark.parametrize("kind", [RandomBrightness, RandomContrast, RandomSaturation])
def test_colour_ops_blend_as_ffcv_with_their_draws(kind):
    images = pictures(3)
    ctx = context(np.arange(N) * 3)
    op = kind(0.6, p=0.5)
    apply, factors = op.factors(ctx)
    assert 0 < apply.sum() < N
    assert factors.min() >= 0.4 and factors.max() < 1.6
    out = op(torch.from_numpy(images.copy()), ctx).numpy()
    np.testing.assert_array_equal(out, color_reference(kind, images, apply, factors))
    unchanged = ~apply
    np.testing.assert_array_equal(out[unchanged], images[unchanged])


def test_poison_blends_the_mask_into_the_chosen_samples_only():
    images = pictures(4)
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 256, (H, W, 3)).astype(np.uint8)
    alpha = rng.random((H, W))
    ctx = context(np.arange(10, 10 + N))
    out = Poison(mask, alpha, [12, 30, 11, 500], clamp=(5, 250))(
        torch.from_numpy(images.copy()), ctx).numpy()
    for i, index in enumerate(ctx.indices):
        if index in (11, 12, 30):
            a = np.repeat(alpha[:, :, None], 3, axis=2)
            temp = images[i].astype(np.float32)
            temp *= 1 - a
            temp += mask.astype(float) * a
            np.clip(temp, 5, 250, out=temp)
            np.testing.assert_array_equal(out[i], temp.astype(np.uint8))
        else:
            np.testing.assert_array_equal(out[i], images[i])


def test_replace_label_relabels_the_chosen_samples():
    labels = torch.arange(N, dtype=torch.int64).view(-1, 1)
    ctx = context(np.arange(N) + 100)
    out = ReplaceLabel([103, 110, 7], 99)(labels.clone(), ctx)
    expected = labels.clone()
    expected[[3, 10]] = 99
    assert torch.equal(out, expected)


def test_mixup_images_and_labels_agree_through_the_loader(beton):
    stored = pictures()
    for same_lambda in (True, False):
        loader = Loader(beton, batch_size=8, num_workers=2, order="random", seed=11, pipelines={
            "image": [SimpleRGBImageDecoder(), ImageMixup(0.4, same_lambda), ToTensor()],
            "label": [IntDecoder(), LabelMixup(0.4, same_lambda), ToTensor(),
                      MixupToOneHot(5)]})
        # The loader's order, to know which stored image each row is.
        order = loader.epoch_indices(0)
        raw = Loader(beton, batch_size=8, num_workers=0, order="random", seed=11, pipelines={
            "image": None, "label": [IntDecoder(), LabelMixup(0.4, same_lambda), ToTensor()]})
        for b, ((images, targets), (rows,)) in enumerate(zip(loader, raw)):
            idx = order[b * 8:(b + 1) * 8]
            lam = rows[:, 2].double().numpy()
            if same_lambda:
                assert np.all(lam == lam[0])
            else:
                assert len(np.unique(lam)) == 8
            ctx = context(idx, seed=11, batch=b)
            np.testing.assert_array_equal(
                lam.astype(np.float32), mixup_lambdas(0.4, same_lambda, ctx).astype(np.float32))
            full = mixup_lambdas(0.4, same_lambda, ctx)
            x = stored[idx].astype(np.float64)
            expected = (full[:, None, None, None] * x +
                        (1 - full[:, None, None, None]) * np.roll(x, 1, axis=0)).astype(np.uint8)
            np.testing.assert_array_equal(images.numpy(), expected)
            labels = idx % 5
            assert np.array_equal(rows[:, 0].numpy(), labels)
            assert np.array_equal(rows[:, 1].numpy(), np.roll(labels, 1))
            dense = np.zeros((8, 5), dtype=np.float32)
            dense[np.arange(8), labels] = lam
            dense[np.arange(8), np.roll(labels, 1)] = 1 - lam.astype(np.float32)
            np.testing.assert_array_equal(targets.numpy(), dense)


def everything():
    return {"image": [SimpleRGBImageDecoder(), RandomHorizontalFlip(), Cutout(4),
                      RandomTranslate(2), RandomBrightness(0.5), RandomContrast(0.5),
                      RandomSaturation(0.5), ImageMixup(0.3, False), ToTensor(), ToTorchImage(),
                      NormalizeImage(MEAN, STD, np.float32)],
            "label": [IntDecoder(), LabelMixup(0.3, False), ToTensor(), MixupToOneHot(5)]}


def test_random_ops_give_the_same_batches_whatever_num_workers(beton):
    reference = epoch_batches(beton, everything(), 0)
    for workers in (1, 3):
        batches = epoch_batches(beton, everything(), workers)
        assert len(batches) == len(reference)
        for got, want in zip(batches, reference):
            for g, w in zip(got, want):
                assert torch.equal(g, w)
    # ...and draw anew each epoch.
    half = len(reference) // 2
    assert not torch.equal(reference[0][0], reference[half][0])


def test_a_pipeline_written_ffcvs_way_runs(beton):
    loader = Loader(beton, batch_size=8, num_workers=1, pipelines={
        "image": [SimpleRGBImageDecoder(), RandomHorizontalFlip(flip_prob=0.5), Cutout(4),
                  ToTensor(), ToDevice("cpu", non_blocking=True), ToTorchImage(),
                  NormalizeImage(MEAN, STD, np.float16)],
        "label": [IntDecoder(), ToTensor(), Squeeze(1)]})
    images, labels = next(iter(loader))
    assert images.shape == (8, 3, H, W) and images.dtype == torch.float16
    assert images.is_contiguous(memory_format=torch.channels_last)
    assert labels.shape == (8,)


def test_random_horizontal_flip_takes_ffcvs_argument():
    images = pictures(5)
    ctx = context(np.arange(N))
    out = RandomHorizontalFlip(flip_prob=0.5)(torch.from_numpy(images.copy()), ctx).numpy()
    flips = draws(7, 0, ctx.indices, OP_FLIP, 0) < 0.5
    np.testing.assert_array_equal(out, np.where(flips[:, None, None, None],
                                                images[:, :, ::-1], images))
    with pytest.raises(TypeError):
        RandomHorizontalFlip(p=0.5)


def test_normalize_image_uses_ffcvs_table_in_any_layout():
    images = torch.from_numpy(pictures(6))
    for dtype in (np.float32, np.float16):
        table = ((np.arange(256)[:, None] - MEAN[None, :]) / STD[None, :]).astype(dtype)
        expected = table[images.numpy(), np.arange(3)]
        op = NormalizeImage(MEAN, STD, dtype)
        np.testing.assert_array_equal(op(images, context(np.arange(N))).numpy(), expected)
        nchw = op(ToTorchImage()(images, context(np.arange(N))), context(np.arange(N)))
        assert nchw.is_contiguous(memory_format=torch.channels_last)
        np.testing.assert_array_equal(nchw.permute(0, 2, 3, 1).numpy(), expected)


def test_normalize_image_gather_path_uses_the_table_too():
    """bfloat16 (no numpy dtype) takes the torch path that GPU batches take."""
    images = torch.from_numpy(pictures(7))
    table = torch.from_numpy((np.arange(256)[:, None] - MEAN[None, :]) / STD[None, :])
    expected = table.to(torch.bfloat16)[images.long(), torch.arange(3)]
    out = NormalizeImage(MEAN, STD, torch.bfloat16)(images, context(np.arange(N)))
    assert out.dtype == torch.bfloat16 and torch.equal(out, expected)


@pytest.mark.parametrize("make", [lambda: Cutout(3), lambda: RandomTranslate(2),
                                  lambda: RandomSaturation(0.5), lambda: ImageMixup(0.5, False)])
def test_image_ops_accept_to_torch_images_view(make):
    images = torch.from_numpy(pictures(8))
    ctx = context(np.arange(N))
    plain = make()(images.clone(), ctx)
    view = make()(ToTorchImage()(images.clone(), ctx), ctx)
    assert view.shape == (N, 3, H, W) and view.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(view.permute(0, 2, 3, 1), plain)


def test_tensor_ops_take_ffcvs_arguments():
    ctx = context(np.arange(4))
    batch = torch.arange(4, dtype=torch.int64).view(4, 1, 1)
    assert Squeeze(1)(batch, ctx).shape == (4, 1)
    assert Squeeze(1, 2)(batch, ctx).shape == (4,)
    assert Squeeze()(batch[:1], ctx).shape == (1,)          # the batch dimension stays
    assert Convert(np.float32)(batch, ctx).dtype == torch.float32
    assert Convert(target_dtype=torch.float16)(batch, ctx).dtype == torch.float16
    halves = torch.tensor([[1.5, -2.0]], dtype=torch.float16)
    bits = View(np.int16)(halves, ctx)
    assert bits.dtype == torch.int16
    assert torch.equal(View(torch.float16)(bits, ctx), halves)
    images = torch.zeros((2, 4, 5, 3), dtype=torch.float16).view(torch.int16)
    out = ToTorchImage(channels_last=False, convert_back_int16=True)(images, ctx)
    assert out.dtype == torch.float16 and out.shape == (2, 3, 4, 5) and out.is_contiguous()
    assert ToTorchImage(convert_back_int16=False)(images, ctx).dtype == torch.int16
    assert torch.equal(ModuleWrapper(torch.nn.Flatten())(images.float(), ctx),
                       images.float().flatten(1))


def test_bad_arguments_say_what_is_wrong():
    ctx = context(np.arange(2))
    small = torch.zeros((2, 4, 4, 3), dtype=torch.uint8)
    with pytest.raises(ValueError, match="crop_size 5 exceeds the 4x4"):
        Cutout(5)(small, ctx)
    with pytest.raises(ValueError, match="fill"):
        Cutout(2, fill=(0, 0, 300))
    with pytest.raises(ValueError, match="alpha must be > 0"):
        ImageMixup(0, True)
    with pytest.raises(ValueError, match="mask is"):
        Poison(np.zeros((3, 3, 3)), 0.5, [0])(small, ctx)
    with pytest.raises(ValueError, match="before ToDevice|\\[B, H, W, C\\]"):
        RandomBrightness(0.2)(torch.zeros((2, 4), dtype=torch.uint8), ctx)
    with pytest.raises(ValueError, match="outside"):
        MixupToOneHot(3)(torch.tensor([[0.0, 4.0, 0.5], [1.0, 0.0, 0.5]]), ctx)


# -- live: FFCV's own code ---------------------------------------------------------------------------

FFCV_TRANSFORMS = r'''
import sys
import numpy as np
import torch as ch
from ffcv.pipeline.compiler import Compiler
Compiler.set_enabled(False)
from ffcv.pipeline.state import State
from ffcv.transforms import (Cutout, RandomTranslate, RandomBrightness, RandomContrast,
                             RandomSaturation, RandomHorizontalFlip, ImageMixup, LabelMixup,
                             MixupToOneHot, Poison, ReplaceLabel, NormalizeImage, ToTorchImage,
                             Squeeze, Convert, View)
import ffcv.transforms.flip as flip_module
import ffcv.transforms.translate as translate_module

d = dict(np.load(sys.argv[1]))
out = {}


class Feed:
    """Hands out the values fastdata drew, in the order FFCV's code draws."""
    def __init__(self, values):
        self.values = list(values)

    def __call__(self, *args, **kwargs):
        return self.values.pop(0)


def run(op, batch, indices=None, jit=True, dtype=None):
    state = State(jit_mode=jit, device=ch.device('cpu'), shape=tuple(batch.shape[1:]),
                  dtype=dtype if dtype is not None else batch.dtype)
    _, query = op.declare_state_and_memory(state)
    dst = None
    if query is not None:
        if isinstance(query.dtype, ch.dtype):
            dst = ch.zeros((len(batch), *query.shape), dtype=query.dtype)
        else:
            dst = np.zeros((len(batch), *query.shape), dtype=query.dtype)
    code = op.generate_code()
    flags = getattr(code, 'py_func', code)
    args = [batch, dst] + ([indices] if getattr(flags, 'with_indices', False) else [])
    return code(*args)


images, indices = d['images'], d['indices']
np.random.randint = Feed(d['cutout'].reshape(-1))
out['cutout'] = run(Cutout(5, (10, 20, 30)), images.copy())
translate_module.randint = Feed(d['translate'].reshape(-1))
out['translate'] = run(RandomTranslate(3, (1, 2, 3)), images.copy())
for name, cls in (('brightness', RandomBrightness), ('contrast', RandomContrast),
                  ('saturation', RandomSaturation)):
    np.random.rand = Feed([d[name + '_u']])
    np.random.uniform = Feed([d[name + '_factor']])
    out[name] = run(cls(0.6, 0.5), images.copy())
flip_module.rand = Feed([d['flip_u']])
out['flip'] = run(RandomHorizontalFlip(0.5), images.copy())
np.random.seed = lambda *a: None
for same in (0, 1):
    lam = d['lam_%d' % same]
    np.random.beta = Feed([lam[0] if same else lam] * 2)
    out['image_mixup_%d' % same] = run(ImageMixup(0.4, bool(same)), images.copy(), indices)
    out['label_mixup_%d' % same] = run(LabelMixup(0.4, bool(same)), d['labels'].copy(),
                                       indices)
    rows = ch.from_numpy(out['label_mixup_%d' % same].copy())
    out['onehot_%d' % same] = run(MixupToOneHot(5), rows, jit=False,
                                  dtype=ch.float32).numpy()
out['poison'] = run(Poison(d['mask'], d['alpha'], [12, 30, 11, 500], (5, 250)), images.copy(),
                    indices)
out['replace'] = run(ReplaceLabel([13, 20, 7], 99), d['labels'].copy(), indices)
for name, dtype in (('norm32', np.float32), ('norm16', np.float16)):
    result = run(NormalizeImage(MEAN, STD, dtype), images.copy(), indices)
    out[name] = result.view(dtype)
tensor = ch.from_numpy(images.copy())
half_bits = ch.from_numpy(d['half_bits'])
out['torch_image'] = run(ToTorchImage(True, True), half_bits, jit=False,
                         dtype=ch.int16).float().numpy()
out['squeeze'] = run(Squeeze(1), ch.from_numpy(d['labels'].copy()), jit=False,
                     dtype=ch.int64).numpy()
out['convert'] = run(Convert(ch.float16), tensor, jit=False, dtype=ch.uint8).numpy()
out['view'] = run(View(ch.int16), ch.from_numpy(d['halves']), jit=False,
                  dtype=ch.float16).numpy()
# The ops without random draws also through FFCV's compiled build (Numba, fastmath).
Compiler.set_enabled(True)
compiled_run = run


def run(op, batch, indices=None, jit=True, dtype=None):
    generate = op.generate_code
    op.generate_code = lambda: Compiler.compile(generate())
    return compiled_run(op, batch, indices, jit, dtype)


out['poison_jit'] = run(Poison(d['mask'], d['alpha'], [12, 30, 11, 500], (5, 250)),
                        images.copy(), indices)
out['replace_jit'] = run(ReplaceLabel([13, 20, 7], 99), d['labels'].copy(), indices)
for name, dtype in (('norm32', np.float32), ('norm16', np.float16)):
    out[name + '_jit'] = run(NormalizeImage(MEAN, STD, dtype), images.copy(), indices).view(dtype)
np.savez(sys.argv[2], **out)
'''


def test_transforms_equal_ffcvs_code_given_the_same_draws(ffcv_python, tmp_path):
    images = pictures(9, 16)
    indices = np.arange(10, 26, dtype=np.int64)
    ctx = context(indices)
    labels = (indices % 5).reshape(-1, 1).astype(np.int64)
    rng = np.random.default_rng(1)
    mask = rng.integers(0, 256, (H, W, 3)).astype(np.uint8)
    alpha = rng.random((H, W))
    inputs = dict(images=images, indices=indices, labels=labels, mask=mask, alpha=alpha,
                  cutout=Cutout(5).square_origins(ctx, H, W),
                  translate=RandomTranslate(3).offsets(ctx),
                  flip_u=draws(7, 0, indices, OP_FLIP, 0),
                  half_bits=np.random.default_rng(2).standard_normal((16, 4, 5, 3)).astype(
                      np.float16).view(np.int16),
                  halves=np.random.default_rng(3).standard_normal((16, 6)).astype(np.float16))
    ours = {}
    for name, cls, op_id in (("brightness", RandomBrightness, OP_BRIGHTNESS),
                             ("contrast", RandomContrast, OP_CONTRAST),
                             ("saturation", RandomSaturation, OP_SATURATION)):
        op = cls(0.6, 0.5)
        inputs[name + "_u"] = draws(7, 0, indices, op_id, K_APPLY)
        inputs[name + "_factor"] = op.factors(ctx)[1]
        ours[name] = op(torch.from_numpy(images.copy()), ctx).numpy()
    ours["cutout"] = Cutout(5, (10, 20, 30))(torch.from_numpy(images.copy()), ctx).numpy()
    ours["translate"] = RandomTranslate(3, (1, 2, 3))(torch.from_numpy(images.copy()),
                                                      ctx).numpy()
    ours["flip"] = RandomHorizontalFlip(0.5)(torch.from_numpy(images.copy()), ctx).numpy()
    for same in (0, 1):
        inputs[f"lam_{same}"] = mixup_lambdas(0.4, bool(same), ctx)
        ours[f"image_mixup_{same}"] = ImageMixup(0.4, bool(same))(
            torch.from_numpy(images.copy()), ctx).numpy()
        rows = LabelMixup(0.4, bool(same))(torch.from_numpy(labels.copy()), ctx)
        ours[f"label_mixup_{same}"] = rows.numpy().copy()
        ours[f"onehot_{same}"] = MixupToOneHot(5)(rows, ctx).numpy()
    ours["poison"] = Poison(mask, alpha, [12, 30, 11, 500], (5, 250))(
        torch.from_numpy(images.copy()), ctx).numpy()
    ours["replace"] = ReplaceLabel([13, 20, 7], 99)(torch.from_numpy(labels.copy()), ctx).numpy()
    ours["norm32"] = NormalizeImage(MEAN, STD, np.float32)(torch.from_numpy(images), ctx).numpy()
    ours["norm16"] = NormalizeImage(MEAN, STD, np.float16)(torch.from_numpy(images), ctx).numpy()
    ours["torch_image"] = ToTorchImage(True, True)(torch.from_numpy(inputs["half_bits"]),
                                                   ctx).float().numpy()
    ours["squeeze"] = Squeeze(1)(torch.from_numpy(labels.copy()), ctx).numpy()
    ours["convert"] = Convert(torch.float16)(torch.from_numpy(images), ctx).numpy()
    ours["view"] = View(torch.int16)(torch.from_numpy(inputs["halves"]), ctx).numpy()

    for name in ("poison", "replace", "norm32", "norm16"):
        ours[name + "_jit"] = ours[name]
    np.savez(tmp_path / "in.npz", **inputs)
    script = FFCV_TRANSFORMS.replace("MEAN, STD", f"np.array({MEAN.tolist()}), "
                                                  f"np.array({STD.tolist()})")
    run_ffcv(ffcv_python, script, tmp_path / "in.npz", tmp_path / "out.npz", cwd=tmp_path)
    theirs = dict(np.load(tmp_path / "out.npz"))
    assert set(theirs) == set(ours)
    for name in sorted(ours):
        assert theirs[name].shape == ours[name].shape, name
        assert theirs[name].dtype == ours[name].dtype, name
        assert np.array_equal(theirs[name], ours[name]), name
