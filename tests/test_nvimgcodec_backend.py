"""The nvImageCodec backend.  Its resize (torch ops, the same on the CPU as on a GPU) is checked
against the Numba kernel; the backend runs against the CPU backend in nvImageCodec's CPU-only
mode where nvImageCodec is installed, and in its GPU mode where a CUDA device is visible (the
tests skip with the reason elsewhere; bench/gpu_check.py runs them on the GPU machine)."""
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastdata  # noqa: E402
from fastdata import DatasetWriter, IntField, Loader, RGBImageField  # noqa: E402
from fastdata.backends.resize_torch import resize_box  # noqa: E402
from fastdata.backends.nvimgcodec import NvImageCodecBackend  # noqa: E402
from fastdata.demo import synthetic_photo  # noqa: E402
from fastdata.ops import (CenterCrop, IntDecoder, Mixup, MultiView,  # noqa: E402
                          RandomHorizontalFlip, RandomResizedCrop, Squeeze, ToTensor,
                          ToTorchImage)
from fastdata.pixels.resample import new_scratch, resize_crop_into  # noqa: E402


def _skip_reason(mode):
    try:
        from nvidia import nvimgcodec  # noqa: F401
    except ImportError:
        return "nvImageCodec is not installed (pip install 'fastdata[nvimgcodec]')"
    if mode == "gpu" and not torch.cuda.is_available():
        return "no CUDA device: the GPU mode runs on the GPU machine (bench/gpu_check.py)"
    return None


# The backend's plumbing runs in nvImageCodec's CPU-only mode here; on a GPU machine again on the
# device.
MODES = [pytest.param(mode, marks=pytest.mark.skipif(_skip_reason(mode) is not None,
                                                     reason=str(_skip_reason(mode))))
         for mode in ("cpu", "gpu")]
N, BATCH = 40, 8


@pytest.mark.parametrize("within", [True, False])
@pytest.mark.parametrize("flip", [False, True])
def test_torch_resize_is_the_kernel_within_one_level(within, flip):
    rng = np.random.default_rng(int(within) * 2 + int(flip))
    image = synthetic_photo(rng, 157, 211)
    height, width = image.shape[:2]
    for trial in range(40):
        out_h, out_w = int(rng.integers(4, 90)), int(rng.integers(4, 90))
        h, w = rng.uniform(1.5, height), rng.uniform(1.5, width)
        top, left = rng.uniform(0, height - h), rng.uniform(0, width - w)
        if trial % 2:           # integer boxes, as RandomResizedCrop draws
            top, left, h, w = float(int(top)), float(int(left)), float(int(h)), float(int(w))
        ref = np.empty((out_h, out_w, 3), np.uint8)
        resize_crop_into(image, top, left, h, w, ref, flip, new_scratch(out_h, out_w, height,
                                                                         width), within)
        if within:    # the backends hand the resize the box's pixels only (its read area)
            y0, x0 = int(np.floor(top)), int(np.floor(left))
            y1, x1 = min(int(np.ceil(top + h)), height), min(int(np.ceil(left + w)), width)
            src = torch.from_numpy(np.ascontiguousarray(image[y0:y1, x0:x1]))
            top, left = top - y0, left - x0
        else:
            src = torch.from_numpy(image)
        x_start, x_end = (left + w, left) if flip else (left, left + w)
        out = resize_box(src, top, x_start, top + h, x_end, out_h, out_w).numpy()
        assert out.shape == ref.shape
        assert np.abs(out.astype(int) - ref).max() <= 1


def test_torch_resize_rejects_an_empty_box():
    with pytest.raises(ValueError, match="empty crop box"):
        resize_box(torch.zeros((4, 4, 3), dtype=torch.uint8), 2.0, 1.0, 2.0, 3.0, 2, 2)


def test_missing_nvimgcodec_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "nvidia.nvimgcodec", None)     # as if not installed
    if "nvidia" in sys.modules:      # an imported nvImageCodec is an attribute of the package
        monkeypatch.delattr(sys.modules["nvidia"], "nvimgcodec", raising=False)
    with pytest.raises(ImportError) as info:
        RandomResizedCrop(32, backend="nvimgcodec")
    assert "pip install 'fastdata[nvimgcodec]'" in str(info.value)
    assert "\n" not in str(info.value)


# -- on a GPU ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def beton(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("nvimgcodec") / "photos.beton")
    rng = np.random.default_rng(0)
    samples = [(synthetic_photo(np.random.default_rng(i), int(rng.integers(60, 260)),
                                int(rng.integers(60, 260))), i) for i in range(N)]
    DatasetWriter(path, {"image": RGBImageField(write_mode="proportion"), "label": IntField()},
                  page_size=1 << 21, progress=False).from_indexed_dataset(samples)
    return path


def epoch(path, decoder, extra=(), batch_ops=()):
    loader = Loader(path, batch_size=BATCH, order="random", seed=3, num_workers=2,
                    return_params=True, batch_ops=list(batch_ops),
                    pipelines={"image": [decoder, RandomHorizontalFlip(), *extra, ToTensor()],
                               "label": [IntDecoder(), ToTensor(), Squeeze()]})
    return [tuple(t.cpu().clone() for t in batch) for batch in loader]


def assert_close(cpu, gpu, mean_bound=0.5, max_bound=40):
    """Parameters and labels bit for bit; pixels within the decoders' difference (nvJPEG's IDCT
    and chroma upsampling are not libjpeg-turbo's)."""
    assert len(cpu) == len(gpu)
    diffs = []
    for a, b in zip(cpu, gpu):
        for x, y in zip(a, b):
            if x.dtype == torch.uint8 and x.dim() == 4:
                diffs.append((x.int() - y.int()).abs().float().flatten())
            else:
                assert torch.equal(x, y)
    diff = torch.cat(diffs)
    print(f"nvimgcodec vs cpu: mean {diff.mean():.4f}, max {diff.max():.0f} levels")
    assert diff.mean() <= mean_bound and diff.max() <= max_bound


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("make", [
    lambda b: RandomResizedCrop(64, dct_scaling=False, backend=b),
    lambda b: RandomResizedCrop((40, 56), dct_scaling=False, backend=b),
    lambda b: CenterCrop(48, backend=b),
    lambda b: MultiView(RandomResizedCrop(48, dct_scaling=False), CenterCrop(32), backend=b),
])
def test_same_parameters_pixels_within_the_decoders_difference(beton, make, mode):
    decoder = make(NvImageCodecBackend(device=mode))
    assert decoder.device == ("cpu" if mode == "cpu" else "cuda:0")
    assert_close(epoch(beton, make("cpu")), epoch(beton, decoder))


@pytest.mark.parametrize("mode", MODES)
def test_cutmix_pasted_while_decoding(beton, mode):
    def run(backend):
        return epoch(beton, RandomResizedCrop(48, dct_scaling=False, backend=backend),
                     extra=[ToTensor(), ToTorchImage()],
                     batch_ops=[Mixup(0.0, 1.0, mode="pair", num_classes=N)])
    assert_close(run("cpu"), run(NvImageCodecBackend(device=mode)))


@pytest.mark.parametrize("mode", MODES)
def test_deterministic(beton, mode):
    def run():
        return epoch(beton, RandomResizedCrop(32, backend=NvImageCodecBackend(device=mode)))
    for a, b in zip(run(), run()):
        assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("mode", MODES)
def test_corrupt_jpeg_is_a_sample_error(beton, tmp_path, mode):
    with fastdata.Reader(beton) as reader:
        index = int(np.flatnonzero(np.asarray(reader.column("image")["mode"]) == 0)[2])
        ptr = int(reader.payload_ptrs("image")[index])
        size = int(reader.payload_sizes("image")[index])
    data = bytearray(open(beton, "rb").read())
    record = bytes(data[ptr:ptr + size])
    at = record.index(b"\xff\xda") + 6        # the scan names Huffman tables never defined
    data[ptr + at] = 0x33
    path = tmp_path / "bad.beton"
    path.write_bytes(bytes(data))
    loader = Loader(str(path), batch_size=BATCH, order="sequential", num_workers=1,
                    pipelines={"image": [RandomResizedCrop(
                        32, backend=NvImageCodecBackend(device=mode))],
                               "label": None})
    with pytest.raises(fastdata.SampleError) as info:
        list(loader)
    assert info.value.index == index and info.value.field == "image"

