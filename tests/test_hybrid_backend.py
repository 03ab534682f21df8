"""backend="auto": the CPU/GPU split's bookkeeping, checked on the CPU with stand-ins for the GPU
side (the CPU kernel itself, and DALI in CPU mode): every sample decoded exactly once, by one
side, with the output of a single backend; the share moves toward the side that waits less."""
import threading
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fastdata import DatasetWriter, IntField, Loader, RGBImageField  # noqa: E402
from fastdata.backends.auto import MIN_SHARE, HybridBackend, auto_backend  # noqa: E402
from fastdata.backends.cpu import CPUBackend  # noqa: E402
from fastdata.demo import synthetic_photo  # noqa: E402
from fastdata.ops import (IntDecoder, Mixup, RandomHorizontalFlip,  # noqa: E402
                          RandomResizedCrop, Squeeze, ToTensor, ToTorchImage)

N, BATCH = 48, 16


@pytest.fixture(scope="module")
def beton(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("hybrid") / "photos.beton")
    rng = np.random.default_rng(1)
    samples = [(synthetic_photo(np.random.default_rng(i), int(rng.integers(60, 200)),
                                int(rng.integers(60, 200))), i) for i in range(N)]
    DatasetWriter(path, {"image": RGBImageField(write_mode="proportion"), "label": IntField()},
                  page_size=1 << 21, progress=False).from_indexed_dataset(samples)
    return path


class Recording(CPUBackend):
    """The CPU kernel, recording which sample indices it decoded (and optionally slowed)."""

    def __init__(self, delay: float = 0.0):
        super().__init__()
        self.delay = delay
        self.decoded: list[int] = []
        self.lock = threading.Lock()

    def decode_range(self, crops, indices, start, stop, outs, state, describe=None):
        super().decode_range(crops, indices, start, stop, outs, state, describe)
        with self.lock:
            self.decoded += [int(indices[k]) for k in crops.paste.order[start:stop]]
        time.sleep(self.delay)


def epochs(path, backend, count=2, batch_ops=(), extra=()):
    loader = Loader(path, batch_size=BATCH, order="random", seed=7, num_workers=3,
                    return_params=True, batch_ops=list(batch_ops), pipelines={
                        "image": [RandomResizedCrop(40, backend=backend), RandomHorizontalFlip(),
                                  *extra, ToTensor()],
                        "label": [IntDecoder(), ToTensor(), Squeeze()]})
    return [tuple(t.clone() for t in batch) for _ in range(count) for batch in loader]


def test_without_a_gpu_auto_is_the_cpu_backend():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible: auto pairs the CPU with a GPU backend here")
    backend = auto_backend()
    assert type(backend) is CPUBackend
    assert type(RandomResizedCrop(32, backend="auto").backend) is CPUBackend


def test_every_sample_decoded_once_by_one_side_with_the_cpu_output(beton):
    cpu_side, gpu_side = Recording(), Recording()
    hybrid = HybridBackend(cpu_side, gpu_side, share=0.5)
    split = epochs(beton, hybrid)
    plain = epochs(beton, "cpu")
    # Both sides ran the same kernel on the same crops: bit for bit the CPU backend's batches.
    assert len(split) == len(plain) == 2 * (N // BATCH)
    for a, b in zip(split, plain):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    # Each epoch visits every sample once; each visit was decoded by exactly one side.
    decoded = sorted(cpu_side.decoded + gpu_side.decoded)
    assert decoded == sorted(list(range(N)) * 2)
    assert gpu_side.decoded and cpu_side.decoded
    # The GPU side took each batch's first share of positions, as task_ranges said.
    assert len(hybrid.shares) == 2 * (N // BATCH)
    assert len(gpu_side.decoded) == sum(round(s * BATCH) for s in hybrid.shares)


def test_task_ranges_cover_the_batch_once_with_the_gpu_range_first():
    hybrid = HybridBackend(CPUBackend(), CPUBackend(), share=0.3)
    for n in (1, 2, 7, 16, 256):
        ranges = hybrid.task_ranges(n)
        assert ranges[0][0] == 0 and ranges[0][1] == hybrid.gpu_count(n) >= 1
        covered = [k for s, e in ranges for k in range(s, e)]
        assert covered == list(range(n))
        assert all(s != 0 for s, _ in ranges[1:])       # only the GPU's range starts at 0


@pytest.mark.parametrize("slow_side", ["gpu", "cpu"])
def test_the_share_moves_away_from_the_side_that_is_slower(beton, slow_side):
    cpu_side = Recording(delay=0.15 if slow_side == "cpu" else 0.0)
    gpu_side = Recording(delay=0.3 if slow_side == "gpu" else 0.0)
    hybrid = HybridBackend(cpu_side, gpu_side, share=0.5)
    epochs(beton, hybrid, count=1)
    if slow_side == "gpu":
        assert hybrid.share < 0.5 and hybrid.share >= MIN_SHARE
    else:
        assert hybrid.share > 0.5


def test_cutmix_is_done_after_decoding_with_the_same_draws(beton):
    assert HybridBackend(CPUBackend(), CPUBackend()).supports_paste is False

    def run(backend):
        return epochs(beton, backend, count=1, extra=[ToTensor(), ToTorchImage()],
                      batch_ops=[Mixup(0.0, 1.0, mode="pair", num_classes=N)])
    # Pasting while decoding (cpu) and cutting the decoded batch (hybrid) give the same pixels.
    for a, b in zip(run(HybridBackend(CPUBackend(), CPUBackend())), run("cpu")):
        assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_with_dali_in_cpu_mode_as_the_gpu_side(beton):
    pytest.importorskip("nvidia.dali", reason="nvidia-dali is not installed")
    from fastdata.backends.dali import DaliBackend

    class RecordingDali(DaliBackend):
        def __init__(self):
            super().__init__(device="cpu")
            self.decoded = []

        def decode_range(self, crops, indices, start, stop, outs, state, describe=None):
            super().decode_range(crops, indices, start, stop, outs, state, describe)
            self.decoded += [int(indices[k]) for k in crops.paste.order[start:stop]]
    cpu_side, gpu_side = Recording(), RecordingDali()
    split = epochs(beton, HybridBackend(cpu_side, gpu_side, share=0.5), count=1)
    plain = epochs(beton, "cpu", count=1)
    assert sorted(cpu_side.decoded + gpu_side.decoded) == list(range(N))
    assert gpu_side.decoded and cpu_side.decoded
    for a, b in zip(split, plain):
        assert torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])    # labels, params
        d = (a[0].int() - b[0].int()).abs().float()
        assert d.mean() <= 0.2 and d.max() <= 24          # the DALI rows: resampling only
