"""The crop decoders against each other and against torchvision, on every pixel.

- The simplejpeg fallback and the libjpeg-turbo region decoder decode the same pixels (the box
  divided by the DCT scale's denominator), so their outputs agree to a stated bound, border
  rows and columns included.
- dct_scaling=False gives torchvision's resized_crop of the full-resolution decode.
- CenterCrop's default box is torchvision's Resize(256) + CenterCrop(224); box="ffcv" is FFCV's.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as tvf

import fastdata
from fastdata.pixels import libturbojpeg
from fastdata.ops import CenterCrop, CenterCropRGBImageDecoder, RandomResizedCrop

from test_resample import photo

SIZES = [(375, 500), (500, 333), (480, 640), (213, 320), (333, 500), (612, 459)]


@pytest.fixture(scope="module")
def jpeg_file(tmp_path_factory):
    """Photo-like JPEGs (q90, 4:2:0 as FFCV writes) of ImageNet-like sizes, plus their decoded
    pixels (libjpeg-turbo's full decode, which the region decoder must agree with)."""
    rng = np.random.default_rng(11)
    images = [photo(rng, *SIZES[k % len(SIZES)]) for k in range(24)]
    path = tmp_path_factory.mktemp("parity") / "jpg.beton"
    fastdata.DatasetWriter(path, {"image": fastdata.RGBImageField("jpg", jpeg_quality=90),
                                  "label": fastdata.IntField()},
                           num_workers=1, progress=False).from_indexed_dataset(
        [(img, k) for k, img in enumerate(images)])
    with fastdata.Reader(path) as r:
        decoded = [r.read(k, "image") for k in range(len(r))]
    return path, decoded


def _load(path, decoder, epochs=(0,)):
    """(images uint8 [N, H, W, 3], params float64 [N, 9]) of every sample, in file order."""
    loader = fastdata.Loader(path, batch_size=8, num_workers=2, order="sequential",
                             drop_last=False, return_params=True,
                             pipelines={"image": [decoder], "label": None})
    images, params = [], []
    try:
        for _ in epochs:          # each iter() runs the next epoch
            for batch, batch_params in loader:
                images.append(batch.copy())     # no ToTensor: numpy, as in FFCV
                params.append(batch_params.numpy().copy())
    finally:
        loader.close()
    return np.concatenate(images), np.concatenate(params)


def _diff(a, b):
    return np.abs(a.astype(np.int16) - b.astype(np.int16))


def _border(d, width=2):
    return np.concatenate([d[:width].ravel(), d[-width:].ravel(), d[:, :width].ravel(),
                           d[:, -width:].ravel()])


@pytest.mark.parametrize("size", [64, 160, 224])
def test_fallback_matches_region_decoder(jpeg_file, size):
    """Same file, seed and boxes (DCT-scaled at 64 px for most boxes, at 160 px for some):
    simplejpeg's whole decode vs libjpeg-turbo's region decode.  Measured: identical on these
    images (the region is decoded 4 pixels wider than the box, so chroma upsampling at its edge
    sees the same neighbours); bound: every pixel within 1 level."""
    assert libturbojpeg.AVAILABLE, "the turbojpeg wheel (libjpeg-turbo 3) is not installed"
    path, _ = jpeg_file
    turbo, params = _load(path, RandomResizedCrop(size), epochs=range(4))
    fallback, params2 = _load(path, RandomResizedCrop(size, use_libturbojpeg=False),
                              epochs=range(4))
    assert np.array_equal(params, params2)
    d = _diff(turbo, fallback)
    assert d.max() <= 1 and _border(d.transpose(1, 2, 0, 3)).max() <= 1
    assert d.mean() < 0.001


@pytest.mark.parametrize("size", [64, 160, 224])
def test_without_dct_scaling_is_torchvision_resized_crop(jpeg_file, size):
    """dct_scaling=False: torchvision's resized_crop(antialias=True) of the fully decoded image
    over the same box, within 1 level on every pixel, the border included."""
    path, decoded = jpeg_file
    images, params = _load(path, RandomResizedCrop(size, dct_scaling=False), epochs=range(2))
    for k, (image, p) in enumerate(zip(images, params)):
        top, left, h, w = (int(v) for v in p[:4])
        src = torch.from_numpy(decoded[k % len(decoded)]).permute(2, 0, 1)
        want = tvf.resized_crop(src, top, left, h, w, [size, size], antialias=True)
        want = want.permute(1, 2, 0).numpy()
        if p[8]:
            want = want[:, ::-1]
        assert _diff(image, want).max() <= 1, (k, p)


def test_dct_scaling_moves_pixels_by_a_bounded_amount(jpeg_file):
    """The shortcut's cost in pixels (README): at 64 px most boxes decode at 1/2 to 1/8 scale;
    against torchvision on the full-resolution decode the mean difference stays below 3 levels.
    (bench/dct_scaling.py measures it on photographs.)"""
    path, decoded = jpeg_file
    images, params = _load(path, RandomResizedCrop(64), epochs=range(2))
    means = []
    for k, (image, p) in enumerate(zip(images, params)):
        top, left, h, w = (int(v) for v in p[:4])
        src = torch.from_numpy(decoded[k % len(decoded)]).permute(2, 0, 1)
        want = tvf.resized_crop(src, top, left, h, w, [64, 64], antialias=True)
        want = want.permute(1, 2, 0).numpy()
        means.append(_diff(image, want[:, ::-1] if p[8] else want).mean())
    assert 0 < np.mean(means) < 3.0


@pytest.mark.parametrize("resolution", [224, 160])
def test_center_crop_is_torchvision_resize_then_center_crop(jpeg_file, resolution):
    """CenterCrop(r) = torchvision's Resize(floor(r * 256 / 224)) + CenterCrop(r), antialias,
    within 1 level on every pixel."""
    path, decoded = jpeg_file
    images, _ = _load(path, CenterCrop(resolution))
    resize = int(resolution / (224 / 256) + 1e-9)
    reference = T.Compose([T.Resize(resize, antialias=True), T.CenterCrop(resolution)])
    for image, src in zip(images, decoded):
        want = reference(torch.from_numpy(src).permute(2, 0, 1)).permute(1, 2, 0).numpy()
        assert _diff(image, want).max() <= 1


def test_ffcv_center_crop_box_is_available(jpeg_file):
    """box="ffcv" (and FFCV's name for the op) keep FFCV's square of side int(ratio * short
    side), cropped then resized."""
    path, decoded = jpeg_file
    images, params = _load(path, CenterCropRGBImageDecoder(96, 224 / 256))
    same, _ = _load(path, CenterCrop(96, box="ffcv"))
    assert np.array_equal(images, same)
    for image, p, src in zip(images, params, decoded):
        h, w = src.shape[:2]
        side = int(224 / 256 * min(h, w))
        assert tuple(p[:4]) == ((h - side) // 2, (w - side) // 2, side, side)
        want = tvf.resized_crop(torch.from_numpy(src).permute(2, 0, 1), *(int(v) for v in p[:4]),
                                [96, 96], antialias=True).permute(1, 2, 0).numpy()
        assert _diff(image, want).max() <= 1


def test_raw_records_are_torchvision_resized_crop(tmp_path):
    """Raw records are read in place; the filter stops at the box as torchvision's crop does:
    every pixel within 1 level, the border rows and columns included."""
    rng = np.random.default_rng(5)
    images = [photo(rng, *SIZES[k % len(SIZES)]) for k in range(12)]
    path = tmp_path / "raw.beton"
    fastdata.DatasetWriter(path, {"image": fastdata.RGBImageField("raw"),
                                  "label": fastdata.IntField()},
                           num_workers=1, progress=False).from_indexed_dataset(
        [(img, k) for k, img in enumerate(images)])
    for size in (64, 224):
        out, params = _load(path, RandomResizedCrop(size), epochs=range(3))
        for k, (image, p) in enumerate(zip(out, params)):
            top, left, h, w = (int(v) for v in p[:4])
            src = torch.from_numpy(images[k % len(images)]).permute(2, 0, 1)
            want = tvf.resized_crop(src, top, left, h, w, [size, size], antialias=True)
            want = want.permute(1, 2, 0).numpy()
            d = _diff(image, want[:, ::-1] if p[8] else want)
            assert d.max() <= 1 and _border(d).max() <= 1, (k, p)
