"""The DALI backend in DALI's CPU mode (no GPU needed) against the Numba (cpu) backend: same
parameters bit for bit, pixels within the resampling difference, same determinism and resume,
same errors.

The pixel bounds are what the two filters give on these photos (DALI's antialiased linear
resize clamps at the box's edge where PIL's filter renormalises; DALI decodes at full scale
where the CPU path scales the DCT): with ``dct_scaling=False`` the mean difference is under
0.05 levels, at most 1 level inside the one-pixel border and up to 9 levels on it; with the
CPU side's DCT scaling, a mean of 0.06 and at most 16 levels.
"""
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("nvidia.dali", reason="nvidia-dali is not installed (pip install "
                                          "'fastdata[dali]')")

import fastdata  # noqa: E402
from fastdata import DatasetWriter, IntField, Loader, RGBImageField  # noqa: E402
from fastdata.backends.dali import DaliBackend  # noqa: E402
from fastdata.demo import synthetic_photo  # noqa: E402
from fastdata.ops import (CenterCrop, IntDecoder, Mixup, MultiView,  # noqa: E402
                          RandomHorizontalFlip, RandomResizedCrop, Squeeze, ToTensor,
                          ToTorchImage)
from fastdata.ops.replay import ReplayedCrop, ReplayTargets  # noqa: E402

N, BATCH = 40, 8


@pytest.fixture(scope="module")
def beton(tmp_path_factory):
    """proportion mode: about half the records JPEG, half raw."""
    path = str(tmp_path_factory.mktemp("dali") / "photos.beton")
    rng = np.random.default_rng(0)
    samples = [(synthetic_photo(np.random.default_rng(i), int(rng.integers(60, 260)),
                                int(rng.integers(60, 260))), i) for i in range(N)]
    DatasetWriter(path, {"image": RGBImageField(write_mode="proportion"), "label": IntField()},
                  page_size=1 << 21, progress=False).from_indexed_dataset(samples)
    with fastdata.Reader(path) as reader:
        modes = set(np.asarray(reader.column("image")["mode"]).tolist())
    assert len(modes) == 2, "the fixture must hold both JPEG and raw records"
    return path


def cpu_dali():
    return DaliBackend(device="cpu")


def epoch(path, decoder, *, extra=(), batch_ops=(), seed=3, **kwargs):
    kwargs.setdefault("num_workers", 2)
    loader = Loader(path, batch_size=BATCH, order="random", seed=seed, return_params=True,
                    pipelines={"image": [decoder, *extra, ToTensor()],
                               "label": [IntDecoder(), ToTensor(), Squeeze()]},
                    batch_ops=list(batch_ops), **kwargs)
    return [tuple(t.clone() for t in batch) for batch in loader]


def compare(cpu_batches, dali_batches):
    """Non-image outputs equal bit for bit; the image differences (absolute, int)."""
    assert len(cpu_batches) == len(dali_batches)
    diffs, interior = [], []
    for a, b in zip(cpu_batches, dali_batches):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert x.shape == y.shape and x.dtype == y.dtype
            if x.dtype == torch.uint8 and x.dim() == 4:
                d = (x.int() - y.int()).abs()
                diffs.append(d.flatten())
                interior.append(d[:, 1:-1, 1:-1].flatten())
            else:
                assert torch.equal(x, y)
    return torch.cat(diffs).float(), torch.cat(interior).float()


# (mean, max, max inside the one-pixel border) bounds of the absolute difference, in levels
@pytest.mark.parametrize("make, mean_bound, max_bound, interior_bound", [
    (lambda b: RandomResizedCrop(64, dct_scaling=False, backend=b), 0.05, 12, 2),
    (lambda b: RandomResizedCrop((40, 56), dct_scaling=False, backend=b), 0.05, 12, 2),
    (lambda b: RandomResizedCrop(24, scale=(0.05, 0.3), dct_scaling=False, backend=b), 0.1, 12,
     2),
    (lambda b: RandomResizedCrop(64, backend=b), 0.2, 24, 24),     # CPU side scales the DCT
    (lambda b: CenterCrop(48, backend=b), 0.05, 12, 2),
    (lambda b: CenterCrop(48, box="ffcv", backend=b), 0.05, 12, 2),
])
def test_same_parameters_pixels_within_resampling(beton, make, mean_bound, max_bound,
                                                  interior_bound):
    cpu = epoch(beton, make("cpu"), extra=[RandomHorizontalFlip()])
    dali = epoch(beton, make(cpu_dali()), extra=[RandomHorizontalFlip()])
    assert any(bool(p[:, 8].any()) for *_, p in cpu), "some samples must be flipped"
    diff, interior = compare(cpu, dali)
    assert diff.mean() <= mean_bound and diff.max() <= max_bound, (diff.mean(), diff.max())
    assert interior.max() <= interior_bound, interior.max()


def test_dali_by_name_is_cpu_mode_without_a_gpu(beton):
    decoder = RandomResizedCrop(32, backend="dali")
    if not torch.cuda.is_available():
        assert decoder.backend.mode == "cpu" and decoder.device == "cpu"
    assert torch.equal(epoch(beton, decoder)[0][0],
                       epoch(beton, RandomResizedCrop(32, backend=cpu_dali()))[0][0])


def test_a_later_flip_flips_the_tensor_with_the_same_bits(beton):
    later = [ToTensor(), ToTorchImage(), RandomHorizontalFlip()]
    cpu = epoch(beton, RandomResizedCrop(32, dct_scaling=False), extra=later)
    dali = epoch(beton, RandomResizedCrop(32, dct_scaling=False, backend=cpu_dali()),
                 extra=later)
    diff, _ = compare(cpu, dali)
    assert diff.mean() <= 0.05 and diff.max() <= 12


def test_multiview_decodes_each_view_like_the_cpu_backend(beton):
    def make(backend):
        return MultiView(RandomResizedCrop(48, dct_scaling=False),
                         RandomResizedCrop(24, scale=(0.05, 0.4), dct_scaling=False),
                         CenterCrop(32), backend=backend)
    cpu = epoch(beton, make("cpu"), extra=[RandomHorizontalFlip()])
    dali = epoch(beton, make(cpu_dali()), extra=[RandomHorizontalFlip()])
    assert len(cpu[0]) == 3 + 1 + 3          # three views, label, three params records
    diff, _ = compare(cpu, dali)
    assert diff.mean() <= 0.05 and diff.max() <= 10


class Spy:
    """Records Mixup's draws per batch (ctx.mix) and whether the decoder pasted (CutMix)."""

    def __init__(self):
        self.seen = {}

    def __call__(self, batch, ctx):
        self.seen[ctx.batch] = {k: (v.clone() if isinstance(v, torch.Tensor) else np.copy(v))
                                for k, v in vars(ctx.mix).items()
                                if isinstance(v, (torch.Tensor, np.ndarray))}
        self.seen[ctx.batch]["pasted"] = ctx.crops["image"].paste.active
        return batch


def test_cutmix_pasted_while_decoding_matches_the_cpu_backend(beton):
    def run(backend):
        spy = Spy()
        batches = epoch(beton, RandomResizedCrop(48, dct_scaling=False, backend=backend),
                        extra=[RandomHorizontalFlip(), ToTensor(), ToTorchImage()],
                        batch_ops=[Mixup(0.0, 1.0, mode="pair", num_classes=N), spy])
        return batches, spy.seen
    cpu, cpu_seen = run("cpu")
    dali, dali_seen = run(cpu_dali())
    assert any(seen["pasted"] for seen in cpu_seen.values())
    assert cpu_seen.keys() == dali_seen.keys()
    for b in cpu_seen:
        for key, value in cpu_seen[b].items():
            other = dali_seen[b][key]
            assert (torch.equal(value, other) if isinstance(value, torch.Tensor)
                    else np.array_equal(value, other)), key
    # images are NCHW here (ToTorchImage): compare them as they come
    for a, b in zip(cpu, dali):
        assert torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])
        d = (a[0].int() - b[0].int()).abs().float()
        assert d.mean() <= 0.05 and d.max() <= 12


def test_deterministic_across_threads_and_resume_exact(beton):
    def make():
        return RandomResizedCrop(32, backend=cpu_dali())
    one = epoch(beton, make(), extra=[RandomHorizontalFlip()], num_workers=1)
    three = epoch(beton, make(), extra=[RandomHorizontalFlip()], num_workers=3)
    assert all(torch.equal(x, y) for a, b in zip(one, three) for x, y in zip(a, b))

    def loader():
        return Loader(beton, batch_size=BATCH, order="random", seed=5, num_workers=2,
                      pipelines={"image": [make(), RandomHorizontalFlip(), ToTensor()],
                                 "label": [IntDecoder(), ToTensor()]})
    whole = loader()
    uninterrupted = [[t.clone() for t in b] for b in whole] + \
        [[t.clone() for t in b] for b in whole]
    first = loader()
    list(first)
    it = iter(first)
    taken = [[t.clone() for t in next(it)] for _ in range(2)]
    state = first.state_dict()
    del it
    resumed = loader()
    resumed.load_state_dict(state)
    rest = [[t.clone() for t in b] for b in resumed]
    again = uninterrupted[len(uninterrupted) // 2:]
    assert len(taken) + len(rest) == len(again)
    for a, b in zip(taken + rest, again):
        assert all(torch.equal(x, y) for x, y in zip(a, b))


def _patched_copy(beton, tmp_path, name, index, change):
    """A copy of the file with sample ``index``'s image record changed by change(bytes)."""
    with fastdata.Reader(beton) as reader:
        ptr = int(reader.payload_ptrs("image")[index])
        size = int(reader.payload_sizes("image")[index])
        mode = int(reader.column("image")["mode"][index])
    data = bytearray(open(beton, "rb").read())
    data[ptr:ptr + size] = change(bytes(data[ptr:ptr + size]))
    path = tmp_path / name
    path.write_bytes(bytes(data))
    return str(path), mode


def _first_jpeg(beton):
    with fastdata.Reader(beton) as reader:
        return int(np.flatnonzero(np.asarray(reader.column("image")["mode"]) == 0)[2])


def _undefined_huffman_table(record):
    """The scan's first component names Huffman tables 3 (never defined): the header parses,
    the record ends with FF D9, only the decoder fails."""
    at = record.index(b"\xff\xda") + 6
    return record[:at] + b"\x33" + record[at + 1:]


@pytest.mark.parametrize("change, message", [
    (lambda rec: b"\x00" * len(rec), "end-of-image"),      # caught before DALI
    (_undefined_huffman_table, "DALI: "),                 # DALI's own error, then blamed
])
def test_corrupt_jpeg_is_a_sample_error_naming_index_and_field(beton, tmp_path, change,
                                                              message):
    index = _first_jpeg(beton)
    path, mode = _patched_copy(beton, tmp_path, "bad.beton", index, change)
    assert mode == 0
    for backend in ("cpu", cpu_dali()):
        loader = Loader(path, batch_size=BATCH, order="sequential", num_workers=2,
                        pipelines={"image": [RandomResizedCrop(32, backend=backend)],
                                   "label": None})
        with pytest.raises(fastdata.SampleError) as info:
            list(loader)
        assert info.value.index == index and info.value.field == "image"
        if not isinstance(backend, str):
            assert message in str(info.value)


def test_header_size_mismatch_is_a_sample_error(beton, tmp_path):
    import struct
    index = _first_jpeg(beton)

    def wrong_size(record):
        at = record.index(b"\xff\xc0") + 5
        return record[:at] + struct.pack(">HH", 17, 19) + record[at + 4:]
    path, _ = _patched_copy(beton, tmp_path, "sof.beton", index, wrong_size)
    loader = Loader(path, batch_size=BATCH, order="sequential", num_workers=1,
                    pipelines={"image": [RandomResizedCrop(32, backend=cpu_dali())],
                               "label": None})
    with pytest.raises(fastdata.SampleError, match="differs from its record") as info:
        list(loader)
    assert info.value.index == index


def _teacher():
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=2), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 6))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return model


def test_replayed_crop_replays_like_the_cpu_backend(beton, tmp_path):
    from fastdata.writers.reinforce import reinforce
    out = str(tmp_path / "reinforced.beton")
    reinforce(beton, _teacher(), out, num_augs=3, top_k=2, batch_size=10, device="cpu", seed=3,
              output_size=32, num_workers=2, progress=False, mixup_p=0.5, cutmix_p=0.5)

    def run(backend):
        loader = Loader(out, batch_size=BATCH, num_workers=2, order="random", seed=1,
                        pipelines={"image": [ReplayedCrop(32, backend=backend,
                                                          dct_scaling=False), ToTensor()],
                                   "reinforce": [ReplayTargets(6, image="image"), ToTensor()],
                                   "label": [IntDecoder(), ToTensor()]})
        return [tuple(t.clone() for t in b) for b in loader]
    cpu, dali = run("cpu"), run(cpu_dali())
    diff, _ = compare(cpu, dali)
    assert diff.mean() <= 0.1 and diff.max() <= 10


def test_replayed_crop_refuses_device_outputs():
    backend = DaliBackend(device="cpu")
    backend.device = "cuda:0"            # what device="gpu" sets
    with pytest.raises(ValueError, match="on the host"):
        ReplayedCrop(32, backend=backend)


def test_missing_dali_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)
    with pytest.raises(ImportError) as info:
        RandomResizedCrop(32, backend="dali")
    assert "pip install 'fastdata[dali]'" in str(info.value)
    assert "\n" not in str(info.value)
