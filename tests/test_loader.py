"""The Loader: API shape, orders, determinism, resume, augmentation parameters and quality,
thread hygiene, memory, and decode errors."""
import gc
import math
import os
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastdata  # noqa: E402
from fastdata import DatasetWriter, IntField, Loader, RGBImageField  # noqa: E402
from fastdata.demo import synthetic_photo  # noqa: E402
from fastdata.constants import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from fastdata.ops import (CenterCrop, IntDecoder, Normalize, RandomHorizontalFlip,  # noqa: E402
                          RandomResizedCrop, Squeeze, ToTensor, ToTorchImage)
from oracles import resize_crop_reference  # noqa: E402
from fastdata.rng import OP_CROP, make_key, uniform  # noqa: E402

N = 96


def _images(n, seed=0, max_side=160):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = int(rng.integers(40, max_side)), int(rng.integers(40, max_side))
        out.append(synthetic_photo(np.random.default_rng((seed, i)), h, w))
    return out


@pytest.fixture(scope="module")
def images():
    return _images(N)


@pytest.fixture(scope="module")
def beton(tmp_path_factory, images):
    """Proportion mode: a mix of JPEG and raw records; label = sample index."""
    path = str(tmp_path_factory.mktemp("loader") / "mixed.beton")
    fields = {"image": RGBImageField(write_mode="proportion", jpeg_quality=92),
              "label": IntField()}
    DatasetWriter(path, fields, page_size=1 << 21, num_workers=2, progress=False) \
        .from_indexed_dataset([(img, i) for i, img in enumerate(images)])
    return path


def train_loader(path, **kwargs):
    kwargs.setdefault("batch_size", 16)
    kwargs.setdefault("num_workers", 2)
    kwargs.setdefault("order", "random")
    pipelines = kwargs.pop("pipelines", None) or {
        "image": [RandomResizedCrop(48), RandomHorizontalFlip(), ToTensor(), ToTorchImage()],
        "label": [IntDecoder(), ToTensor(), Squeeze()]}
    return Loader(path, pipelines=pipelines, **kwargs)


def epoch_batches(loader):
    return [tuple(t.clone() for t in batch) for batch in loader]


# -- API shape ----------------------------------------------------------------------------------

def test_batches_are_tensors_in_file_order(beton):
    """As in FFCV: one output per field in the file's field order, whatever order the
    pipelines dict lists them in."""
    loader = Loader(beton, batch_size=16, num_workers=2, pipelines={
        "label": [IntDecoder(), ToTensor(), Squeeze()],
        "image": [RandomResizedCrop(32), ToTensor(), ToTorchImage(), Normalize()]})
    assert loader.pipeline_names == ("image", "label")
    assert len(loader) == N // 16
    batches = epoch_batches(loader)      # clone: a batch's tensors share a reused ring slot
    assert len(batches) == len(loader)
    images, labels = batches[0]
    assert labels.dtype == torch.int64 and labels.shape == (16,)
    assert images.shape == (16, 3, 32, 32) and images.dtype == torch.float32
    assert images.is_contiguous(memory_format=torch.channels_last)
    assert labels.tolist() == list(range(16))          # sequential order by default


def test_default_pipelines_and_dropped_fields(tmp_path):
    path = str(tmp_path / "same.beton")
    imgs = [np.full((8, 10, 3), i, np.uint8) for i in range(10)]
    DatasetWriter(path, {"image": RGBImageField(), "label": IntField()}, page_size=1 << 21,
                  progress=False).from_indexed_dataset([(im, i) for i, im in enumerate(imgs)])
    images, labels = next(iter(Loader(path, batch_size=4)))
    assert images.shape == (4, 8, 10, 3) and images.dtype == torch.uint8
    assert labels.shape == (4, 1) and labels[:, 0].tolist() == [0, 1, 2, 3]
    assert torch.equal(images[2], torch.full((8, 10, 3), 2, dtype=torch.uint8))
    (only,) = next(iter(Loader(path, batch_size=4, pipelines={"image": None})))
    assert only.shape == (4, 1)
    with pytest.raises(ValueError, match="not in"):
        Loader(path, batch_size=4, pipelines={"nope": None})


def test_drop_last_and_partial_batch(beton):
    loader = train_loader(beton, batch_size=40, drop_last=False)
    sizes = [len(b[1]) for b in loader]
    assert sizes == [40, 40, 16] and len(loader) == 3
    assert sorted(torch.cat([b[1] for b in epoch_batches(loader)]).tolist()) == list(range(N))
    loader = train_loader(beton, batch_size=40, drop_last=True)
    assert [len(b[1]) for b in loader] == [40, 40] and len(loader) == 2


# -- orders ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("order", ["sequential", "random", "quasi_random"])
def test_each_epoch_visits_every_sample_once(beton, order):
    loader = train_loader(beton, order=order, batch_size=8, seed=1)
    seen = [torch.cat([b[1] for b in epoch_batches(loader)]).tolist() for _ in range(3)]
    for epoch in seen:
        assert sorted(epoch) == list(range(N))
    if order == "sequential":
        assert seen[0] == list(range(N))
    else:
        assert seen[0] != seen[1] != seen[2]     # reshuffled every epoch


def test_quasi_random_reads_few_pages_at_a_time(tmp_path):
    # 600 samples of ~20 KB on 2 MiB pages: ~6 pages; the first 100 samples of an epoch come
    # from a bounded window of pages, not from all of them at random.
    path = str(tmp_path / "pages.beton")
    DatasetWriter(path, {"blob": fastdata.BytesField(), "label": IntField()}, page_size=1 << 21,
                  progress=False).from_indexed_dataset(
        [(bytes(20000), i) for i in range(600)])
    loader = Loader(path, batch_size=100, order="quasi_random", seed=0,
                    pipelines={"blob": None, "label": [IntDecoder(), ToTensor(), Squeeze()]})
    reader = fastdata.Reader(path)
    page = (reader.payload_ptrs("blob") // np.uint64(1 << 21)).astype(int)
    first = next(iter(loader))[0].numpy()
    assert len(set(page[first])) <= 6
    assert sorted(torch.cat([b[0] for b in epoch_batches(loader)]).tolist()) == list(range(600))


# -- determinism and resume ---------------------------------------------------------------------

def test_same_seed_same_batches_whatever_the_threads(beton):
    reference = epoch_batches(train_loader(beton, seed=5, num_workers=1, batches_ahead=1))
    for workers, ahead in ((2, 3), (3, 2)):
        again = epoch_batches(train_loader(beton, seed=5, num_workers=workers,
                                           batches_ahead=ahead))
        assert all(torch.equal(a, b) for x, y in zip(reference, again) for a, b in zip(x, y))
    other = epoch_batches(train_loader(beton, seed=6))
    assert not torch.equal(reference[0][0], other[0][0])


def test_resume_mid_epoch_is_exact(beton):
    loader = train_loader(beton, seed=2)
    uninterrupted = epoch_batches(loader) + epoch_batches(loader)   # epochs 0 and 1

    first = train_loader(beton, seed=2)
    list(first)                                  # epoch 0
    it = iter(first)                             # epoch 1
    taken = [next(it) for _ in range(2)]
    state = first.state_dict()
    assert (state["epoch"], state["batch"]) == (1, 2)
    del it, taken

    resumed = train_loader(beton, seed=2)
    resumed.load_state_dict(state)
    rest = epoch_batches(resumed)
    expected = uninterrupted[len(loader) + 2:]
    assert len(rest) == len(expected)
    assert all(torch.equal(a, b) for x, y in zip(expected, rest) for a, b in zip(x, y))
    assert resumed.state_dict()["epoch"] == 2 and resumed.state_dict()["batch"] == 0

    with pytest.raises(ValueError, match="seed"):
        train_loader(beton, seed=3).load_state_dict(state)


# -- augmentation parameters ----------------------------------------------------------------------

def _torchvision_rrc(height, width, scale, ratio, rand):
    """torchvision's RandomResizedCrop.get_params, written from its documentation, with
    ``rand()`` as the uniform source (four draws per try)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * (scale[0] + (scale[1] - scale[0]) * rand())
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * rand())
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            i = int(rand() * (height - h + 1))
            j = int(rand() * (width - w + 1))
            return i, j, h, w
        rand(), rand()
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def test_rrc_boxes_follow_torchvisions_algorithm():
    from fastdata.ops.crop_params import random_resized_crop_box
    # Same draws -> same boxes, including fallbacks (a 10:1 strip forces them often).
    for (height, width) in ((375, 500), (500, 375), (20, 200), (1, 1), (3, 900)):
        for index in range(300):
            key = np.uint64(make_key(7, 0, index, OP_CROP))
            draws = iter(uniform(key, k) for k in range(40))
            expected = _torchvision_rrc(height, width, (0.08, 1.0), (3 / 4, 4 / 3),
                                        lambda: next(draws))
            got = random_resized_crop_box(key, height, width, 0.08, 1.0, math.log(3 / 4),
                                          math.log(4 / 3))
            assert tuple(got) == expected


RRC_SCALE, RRC_RATIO = (0.08, 1.0), (3 / 4, 4 / 3)


def _torchvision_boxes(height: int, width: int, n: int, seed: int, scale=RRC_SCALE,
                       ratio=RRC_RATIO) -> np.ndarray:
    """int64[n, 4] (top, left, height, width) from torchvision's own
    RandomResizedCrop.get_params, seeded without touching torch's global generator state."""
    from torchvision.transforms import RandomResizedCrop
    image = torch.empty((1, height, width))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return np.array([RandomResizedCrop.get_params(image, list(scale), list(ratio))
                         for _ in range(n)], dtype=np.int64)


def _box_statistics(boxes: np.ndarray, heights: np.ndarray, widths: np.ndarray) -> dict:
    """Per box: area fraction, log aspect (w/h), and where it sits: (top + 0.5) / (h - bh + 1),
    likewise left, which is uniform on (0, 1) for a uniformly placed box."""
    top, left, bh, bw = (boxes[:, k].astype(np.float64) for k in range(4))
    return {"area": bh * bw / (heights * widths), "log_aspect": np.log(bw / bh),
            "top": (top + 0.5) / (heights - bh + 1), "left": (left + 0.5) / (widths - bw + 1)}


def _ks_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    return float(np.abs(np.searchsorted(a, grid, side="right") / len(a)
                        - np.searchsorted(b, grid, side="right") / len(b)).max())


def _ks_limit(n: int, m: int) -> float:
    """The KS distance two samples of one distribution exceed with probability 0.001."""
    return 1.95 * math.sqrt((n + m) / (n * m))


def _assert_same_distribution(ours: dict, theirs: dict, what) -> None:
    for stat in ours:
        distance = _ks_distance(ours[stat], theirs[stat])
        assert distance < _ks_limit(len(ours[stat]), len(theirs[stat])), (what, stat, distance)


def test_rrc_scale_and_ratio_statistics_match_torchvision(beton):
    """The loader's boxes (area fraction, aspect, position) are distributed as torchvision's own
    RandomResizedCrop.get_params draws them for the same image sizes."""
    loader = Loader(beton, batch_size=N, order="random", return_params=True,
                    pipelines={"image": [RandomResizedCrop(32)], "label": None})
    reader = fastdata.Reader(beton)
    ours, theirs, heights, widths = [], [], [], []
    for epoch in range(30):
        (_, params) = next(iter(loader))
        idx = loader.epoch_indices(epoch)
        for k in range(N):
            w, h = reader.original_size(int(idx[k]), "image")
            top, left, bh, bw = (int(v) for v in params[k, :4].tolist())
            assert 0 <= top and top + bh <= h and 0 <= left and left + bw <= w
            ours.append((top, left, bh, bw))
            theirs.append(_torchvision_boxes(h, w, 1, seed=epoch * N + k)[0])
            heights.append(h)
            widths.append(w)
    heights, widths = np.array(heights), np.array(widths)
    _assert_same_distribution(_box_statistics(np.array(ours), heights, widths),
                              _box_statistics(np.array(theirs), heights, widths), "loader")


@pytest.mark.parametrize("height, width", [(375, 500), (500, 375), (224, 224), (20, 200)])
def test_rrc_box_distribution_is_torchvisions_and_the_test_sees_a_difference(height, width):
    """4000 boxes of RandomResizedCrop's sampler against 4000 of torchvision's get_params for
    one size (a 10:1 strip exercises the fallback): the same distribution; and the same
    statistic tells torchvision's own boxes apart when its scale or ratio range is nudged."""
    from fastdata.ops.crop_params import random_resized_crop_boxes
    n = 4000
    boxes = np.zeros((n, 4), dtype=np.int64)
    random_resized_crop_boxes(3, 0, np.arange(n, dtype=np.int64), OP_CROP,
                              np.full(n, height, np.int64), np.full(n, width, np.int64),
                              RRC_SCALE[0], RRC_SCALE[1], math.log(RRC_RATIO[0]),
                              math.log(RRC_RATIO[1]), boxes)
    sizes = np.full(n, height), np.full(n, width)
    ours = _box_statistics(boxes, *sizes)
    _assert_same_distribution(ours, _box_statistics(_torchvision_boxes(height, width, n, 1),
                                                    *sizes), (height, width))
    if height == 20:
        return        # the strip's boxes are mostly the fallback: nudges barely show
    for nudged in (dict(scale=(0.12, 1.0)), dict(ratio=(0.7, 1.3))):
        other = _box_statistics(_torchvision_boxes(height, width, n, 2, **nudged), *sizes)
        assert max(_ks_distance(ours[k], other[k]) for k in ours) > _ks_limit(n, n), nudged


def test_output_matches_torchvision_resampling_of_the_same_box(beton, images):
    loader = Loader(beton, batch_size=N, order="random", seed=4, return_params=True,
                    pipelines={"image": [RandomResizedCrop(56), RandomHorizontalFlip(),
                                         ToTensor()], "label": None})
    batch, params = next(iter(loader))
    idx = loader.epoch_indices(0)
    reader = fastdata.Reader(beton)
    diffs = []
    for k in range(N):
        stored = reader.read(int(idx[k]), "image")   # the stored pixels (JPEG decoded in full)
        top, left, h, w = params[k, :4].tolist()
        ref = resize_crop_reference(stored, top, left, h, w, 56, 56, bool(params[k, 8]))
        diffs.append(np.abs(ref.astype(int) - batch[k].numpy().astype(int)).mean())
    assert max(diffs) <= 2.0, max(diffs)
    assert 0 < params[:, 8].sum() < N          # some flipped, some not


def test_flip_mirrors_and_center_crop_is_deterministic(beton):
    def run(flip_p, order="sequential"):
        decoder = CenterCrop(40)
        loader = Loader(beton, batch_size=N, order=order, seed=1, return_params=True,
                        pipelines={"image": [decoder, RandomHorizontalFlip(flip_p), ToTensor()],
                                   "label": None})
        return next(iter(loader))
    plain, _ = run(0.0)
    always, params = run(1.0)
    assert params[:, 8].tolist() == [1.0] * N
    assert torch.equal(always, plain.flip(2))
    # A flip placed after ToTensor flips the same samples as the fused one.
    loader = Loader(beton, batch_size=N, seed=1, pipelines={
        "image": [CenterCrop(40), ToTensor(), RandomHorizontalFlip()], "label": None})
    late = next(iter(loader))[0]
    fused, fused_params = run(0.5)
    assert torch.equal(late, fused)


def test_normalize_values(beton):
    raw = next(iter(Loader(beton, batch_size=8, pipelines={
        "image": [CenterCrop(24), ToTensor(), ToTorchImage()], "label": None})))[0]
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        norm = next(iter(Loader(beton, batch_size=8, pipelines={
            "image": [CenterCrop(24), ToTensor(), ToTorchImage(),
                      Normalize((0.5, 0.4, 0.3), (0.2, 0.25, 0.3), dtype)],
            "label": None})))[0]
        mean = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)
        std = torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
        expected = (raw.float() / 255 - mean) / std
        assert norm.dtype == dtype
        tolerance = {torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}[dtype]
        assert torch.allclose(norm.float(), expected, atol=tolerance, rtol=tolerance)


# -- threads, memory, errors ---------------------------------------------------------------------

def test_no_thread_outlives_its_epoch(beton):
    baseline = threading.active_count()
    loader = train_loader(beton)
    for _ in loader:
        break
    gc.collect()
    assert threading.active_count() == baseline
    for _ in range(20):
        it = iter(loader)
        next(it)
    del it
    gc.collect()
    assert threading.active_count() == baseline
    list(loader)
    assert threading.active_count() == baseline


def test_rss_stays_flat_over_epochs(beton):
    psutil = pytest.importorskip("psutil")
    process = psutil.Process()
    loader = train_loader(beton, batch_size=32)
    rss = []
    for epoch in range(20):
        for _ in loader:
            pass
        rss.append(process.memory_info().rss)
    # After warm-up, 15 more epochs add (almost) nothing: no allocation per batch.
    assert rss[-1] - rss[4] < 8 << 20, [r >> 20 for r in rss]


def test_decode_error_names_sample_and_field(tmp_path, images):
    path = str(tmp_path / "bad.beton")
    DatasetWriter(path, {"image": RGBImageField(write_mode="jpg"), "label": IntField()},
                  page_size=1 << 21, progress=False).from_indexed_dataset(
        [(img, i) for i, img in enumerate(images[:20])])
    reader = fastdata.Reader(path)
    ptr = int(reader.payload_ptrs("image")[13])
    reader.close()
    with open(path, "r+b") as f:          # keep the header, destroy the entropy-coded data
        f.seek(ptr + 700)
        f.write(b"\xff\xd9" + b"\x00" * 64)
        f.seek(ptr + 20)
        f.write(b"\xff\xff\xff\xff")
    loader = Loader(path, batch_size=4, num_workers=2,
                    pipelines={"image": [RandomResizedCrop(32)], "label": None})
    baseline = threading.active_count()
    with pytest.raises(fastdata.SampleError) as err:
        list(loader)
    assert err.value.index == 13 and err.value.field == "image"
    gc.collect()
    assert threading.active_count() <= baseline


def test_reads_ffcv_written_files():
    # written by FFCV 1.0.2: tests/fixtures/README.md
    path = os.path.join(os.path.dirname(__file__), "fixtures", "ffcv_images_proportion.beton")
    import json
    expected = json.load(open(path + ".json"))["samples"]
    loader = Loader(path, batch_size=8, order="sequential", drop_last=False, pipelines={
        "image": [CenterCrop(64), ToTensor()], "label": [IntDecoder(), ToTensor(), Squeeze()]})
    labels = torch.cat([b[1] for b in epoch_batches(loader)]).tolist()
    assert labels == [s["label"] for s in expected]
    reader = fastdata.Reader(path)
    batch = next(iter(Loader(path, batch_size=8, return_params=True, pipelines={
        "image": [CenterCrop(64), ToTensor()], "label": None})))
    images, params = batch
    for k in range(8):
        full = reader.read(k, "image")
        top, left, h, w = params[k, :4].tolist()
        ref = resize_crop_reference(full, top, left, h, w, 64, 64, False)
        assert np.abs(ref.astype(int) - images[k].numpy().astype(int)).mean() <= 2.0


def _rank_main(rank, world_size, path, port, order, drop_last, out_dir):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world_size)
    try:
        loader = Loader(path, batch_size=5, num_workers=1, order=order, seed=3, distributed=True,
                        drop_last=drop_last, pipelines={
                            "image": None, "label": [IntDecoder(), ToTensor(), Squeeze()]})
        epochs = [torch.cat([b[0].clone() for b in loader]).tolist() for _ in range(2)]
        np.save(os.path.join(out_dir, f"rank{rank}.npy"), np.array(epochs, dtype=np.int64))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("order", ["random", "quasi_random", "sequential"])
def test_two_ranks_cover_every_sample_once(tmp_path, order):
    import socket
    import torch.multiprocessing as mp
    path = str(tmp_path / "labels.beton")
    DatasetWriter(path, {"image": RGBImageField(), "label": IntField()}, page_size=1 << 21,
                  progress=False).from_indexed_dataset(
        [(np.zeros((4, 4, 3), np.uint8), i) for i in range(60)])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank_main, args=(2, path, port, order, True, str(tmp_path)), nprocs=2, join=True)
    ranks = [np.load(tmp_path / f"rank{r}.npy") for r in range(2)]
    for epoch in range(2):
        a, b = ranks[0][epoch].tolist(), ranks[1][epoch].tolist()
        assert len(a) == len(b) == 30
        assert not set(a) & set(b)                       # disjoint
        assert sorted(a + b) == list(range(60))          # complete
    if order != "sequential":
        assert ranks[0][0].tolist() != ranks[0][1].tolist()


def test_shard_padding_and_drop_last_semantics():
    from fastdata.order import shard
    order = np.arange(10)
    padded = [shard(order, r, 3, drop_last=False).tolist() for r in range(3)]
    assert padded == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1]]   # pads with the first samples
    dropped = [shard(order, r, 3, drop_last=True).tolist() for r in range(3)]
    assert dropped == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]           # the tail sample 9 is left out


def test_os_cache_false_reads_the_file_into_memory_with_the_same_batches(beton):
    mapped = epoch_batches(train_loader(beton, seed=8))
    loader = train_loader(beton, seed=8, os_cache=False)
    assert loader.reader._mmap is None          # no memory map left: the bytes live in RAM
    in_memory = epoch_batches(loader)
    assert all(torch.equal(a, b) for x, y in zip(mapped, in_memory) for a, b in zip(x, y))


def test_fallback_without_libturbojpeg_gives_the_same_crops(beton):
    """Where libturbojpeg 3 is missing (``use_libturbojpeg=False`` forces it), JPEGs go through
    simplejpeg: same boxes, same pixels up to the region decoder's edge rounding."""
    from fastdata.ops.image_decoders import MultiView

    def first_batch(**options):
        loader = Loader(beton, batch_size=32, order="random", seed=4, pipelines={
            "image": [MultiView(RandomResizedCrop(40), RandomResizedCrop(20), **options),
                      RandomHorizontalFlip(), ToTensor()], "label": None})
        return next(iter(loader))
    fallback = first_batch(use_libturbojpeg=False)
    for ours, theirs in zip(first_batch(), fallback):
        assert np.abs(theirs.numpy().astype(int) - ours.numpy().astype(int)).mean() < 0.5


def test_decoders_of_the_other_field_types(tmp_path):
    from fastdata import BytesField, FloatField, JSONField, NDArrayField
    from fastdata.ops import BytesDecoder, FloatDecoder, JSONDecoder, NDArrayDecoder
    path = str(tmp_path / "fields.beton")
    rows = [(i, i / 4, np.full((2, 3), i, np.float32), bytes(range(i % 5)), {"i": i, "s": "é"})
            for i in range(10)]
    DatasetWriter(path, {"label": IntField(), "f": FloatField(), "arr": NDArrayField("float32",
                  (2, 3)), "blob": BytesField(), "meta": JSONField()}, page_size=1 << 21,
                  progress=False).from_indexed_dataset(rows)
    loader = Loader(path, batch_size=5, pipelines={
        "label": [IntDecoder(), ToTensor(), Squeeze()], "f": [FloatDecoder(), ToTensor()],
        "arr": [NDArrayDecoder(), ToTensor()], "blob": [BytesDecoder(), ToTensor()],
        "meta": [JSONDecoder()]})
    labels, floats, arrays, blobs, metas = next(iter(loader))
    assert labels.tolist() == [0, 1, 2, 3, 4] and floats[:, 0].tolist() == [0, .25, .5, .75, 1]
    assert arrays.shape == (5, 2, 3) and arrays[3].eq(3).all()
    assert blobs.shape == (5, 4) and blobs[4].tolist() == [0, 1, 2, 3]
    assert blobs[2].tolist() == [0, 1, 0, 0]                    # zero-padded, as FFCV
    assert metas == [{"i": i, "s": "é"} for i in range(5)]
    with pytest.raises(TypeError, match="JSONDecoder cannot decode field 'label'"):
        Loader(path, batch_size=5, pipelines={"label": [JSONDecoder()]})


# -- the decoder seam ----------------------------------------------------------------------------

def test_image_backend_is_chosen_on_the_op(beton):
    from fastdata.ops import CPUBackend
    with pytest.raises(ValueError, match="unknown image backend 'gpu'; known: cpu"):
        RandomResizedCrop(32, backend="gpu")
    decoder = RandomResizedCrop(32, backend="cpu", use_libturbojpeg=False)
    assert isinstance(decoder.backend, CPUBackend) and not decoder.backend.use_libturbojpeg
    assert decoder.device == "cpu"
    given = CPUBackend()
    assert CenterCrop(32, backend=given).backend is given
    loader = Loader(beton, batch_size=8, pipelines={
        "image": [RandomResizedCrop(32, backend="cpu"), ToTensor()], "label": None})
    (images,) = next(iter(loader))
    assert images.shape == (8, 32, 32, 3)


def test_default_decoders_come_from_the_registry():
    """Each field type's default decoder is the one its decoder class registers (the table
    FFCV keeps on its fields); a subclass of a field type gets its parent's."""
    from fastdata import (BytesField, FloatField, JSONField, LabelMapField, NDArrayField,
                          ReinforcementField, TopKField, TorchTensorField)
    from fastdata.ops import (BytesDecoder, FloatDecoder, JSONDecoder, LabelMapDecoder,
                              NDArrayDecoder, ReplayTargets, SimpleRGBImageDecoder,
                              TeacherTargets)
    from fastdata.ops.base import default_decoder
    expected = {RGBImageField: SimpleRGBImageDecoder, IntField: IntDecoder,
                FloatField: FloatDecoder, JSONField: JSONDecoder, BytesField: BytesDecoder,
                NDArrayField: NDArrayDecoder, TorchTensorField: NDArrayDecoder,
                LabelMapField: LabelMapDecoder, TopKField: TeacherTargets,
                ReinforcementField: ReplayTargets}
    for field_type, decoder_type in expected.items():
        assert type(default_decoder(object.__new__(field_type))) is decoder_type, field_type

    class MyIntField(IntField):
        pass
    assert type(default_decoder(object.__new__(MyIntField))) is IntDecoder
    with pytest.raises(TypeError, match="no default decoder for str"):
        default_decoder("not a field")


def test_decoders_that_read_other_crops_prepare_after_them(beton):
    """A decoder that declares ``reads`` prepares after the decoders of those fields, wherever
    its field is stored; a cycle is refused when the Loader is made."""
    from fastdata.ops.base import Decoder

    class CropHeights(Decoder):
        """The crop heights of field ``image`` as a [B, 1] float64 output."""
        def __init__(self, image):
            self.image = image

        @property
        def reads(self):
            return (self.image,)

        def sample_shape(self, batch_size):
            return (1,), np.float64

        def prepare(self, ctx, out):
            out[:len(ctx.indices), 0] = ctx.crops[self.image].boxes[0, :, 2]

    loader = Loader(beton, batch_size=8, return_params=True, pipelines={
        "label": [CropHeights("image"), ToTensor()], "image": [RandomResizedCrop(32)]})
    images, heights, params = next(iter(loader))
    assert isinstance(images, np.ndarray)         # no ToTensor: numpy, as in FFCV
    assert torch.equal(heights[:, 0], params[:, 2])

    class Loop(CropHeights):
        def bind(self, reader, name, field_index):
            Decoder.bind(self, reader, name, field_index)
    with pytest.raises(ValueError, match="cycle"):
        Loader(beton, batch_size=8, pipelines={"label": [Loop("image")],
                                               "image": [Loop("label")]})


# -- progressive resizing ------------------------------------------------------------------------

def _sized_loader(path, decoder, ops=()):
    return train_loader(path, pipelines={
        "image": [decoder, RandomHorizontalFlip(), ToTensor(), ToTorchImage(), *ops],
        "label": [IntDecoder(), ToTensor(), Squeeze()]})


@pytest.mark.parametrize("sizes", [(32, 48, 24), (48, 24, 40)])
def test_output_size_set_between_epochs_takes_effect(beton, sizes):
    """FFCV's progressive resizing (ffcv-imagenet sets ``decoder.output_size`` before each
    epoch): each epoch has the size set before its iter(), growing or shrinking, with the same
    pixels as a loader built at that size; Normalize's per-slot buffers follow.  The first
    size, too, differs from the one the loader was built with."""
    decoder = RandomResizedCrop(sizes[0] + 8)
    loader = _sized_loader(beton, decoder, [Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    got = []
    for size in sizes:
        decoder.output_size = (size, size)
        got.append(epoch_batches(loader))
    loader.close()
    for epoch, size in enumerate(sizes):
        assert all(images.shape[-2:] == (size, size) for images, _ in got[epoch])
        fresh = _sized_loader(beton, RandomResizedCrop(size),
                              [Normalize(IMAGENET_MEAN, IMAGENET_STD)])
        for _ in range(epoch):
            epoch_batches(fresh)
        want = epoch_batches(fresh)
        fresh.close()
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
                   for a, b in zip(got[epoch], want))


def test_center_crop_resize_follows_a_new_output_size():
    """CenterCrop's default resize size is derived from the output size, so it follows it."""
    crop = CenterCrop(224)
    assert crop.resize_size == 256
    crop.output_size = 160
    assert crop.output_size == (160, 160) and crop.resize_size == 182
    assert CenterCrop(224, resize_size=240).resize_size == 240
