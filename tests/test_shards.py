"""Sharded conversion and reading a shard set as one dataset.

The same records written once and as 3 shards (``shard=(K, 3)``) read the same through Reader
and Loader: every field value, and batches bit for bit under sequential and random orders (with
random crops and flips), with the OS cache and in memory, and after a resume.  Quasi-random order
groups by page, so a shard set's batches are those of the file ``fastdata merge`` makes of it
(which keeps each shard's pages).  Shard files are put in K order; a gap, a different N, other
fields or page size, and a corrupt shard are refused naming the file.
"""
import gc
import os
import re
import shutil

import numpy as np
import pytest
import torch

from fastdata import FormatError, IntField, Reader, RGBImageField
from fastdata.cli import main
from fastdata.demo import make_imagenet_like
from fastdata.loader import Loader
from fastdata.merge import merge_shards
from fastdata.ops import (IntDecoder, RandomHorizontalFlip, RandomResizedCrop, Squeeze, ToTensor,
                          ToTorchImage)
from fastdata.shards import ShardedReader, parse_shard, shard_paths, shard_range
from fastdata.writers import write_indexed_dataset

N = 72
SHARDS = 3
PAGE = 1 << 21


def _fields():
    return {"image": RGBImageField(write_mode="proportion", jpeg_quality=90, seed=5),
            "label": IntField()}


@pytest.fixture(scope="module")
def records():
    rng = np.random.default_rng(7)
    out = []
    for i in range(N):
        h, w = int(rng.integers(120, 200)), int(rng.integers(120, 200))
        yy, xx = np.mgrid[:h, :w]
        img = np.stack([(xx * 255 // w), (yy * 255 // h), np.full_like(xx, i * 3)], -1)
        img = (img + rng.integers(0, 20, img.shape)).clip(0, 255).astype(np.uint8)
        out.append((img, i * 7 % 11))
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory, records):
    """(single file, shard paths in K order, merged file) of the same records."""
    root = tmp_path_factory.mktemp("shards")
    single = str(root / "all.beton")
    write_indexed_dataset(records, single, _fields(), page_size=PAGE, num_workers=2,
                          progress=False)
    shards = [str(root / f"train-{k}-of-{SHARDS}.beton") for k in range(SHARDS)]
    for k, path in enumerate(shards):
        report = write_indexed_dataset(records, path, _fields(), page_size=PAGE, num_workers=2,
                                       progress=False, shard=(k, SHARDS))
        assert report.num_written == len(shard_range(N, k, SHARDS))
    merged = str(root / "merged.beton")
    merge_shards(shards, merged)
    return single, shards, merged


def _loader(path, **kwargs):
    kwargs.setdefault("batch_size", 10)
    kwargs.setdefault("num_workers", 2)
    return Loader(path, pipelines={
        "image": [RandomResizedCrop(40), RandomHorizontalFlip(), ToTensor(), ToTorchImage()],
        "label": [IntDecoder(), ToTensor(), Squeeze()]}, drop_last=False, **kwargs)


def _epochs(loader, count=2):
    return [[tuple(t.clone() for t in batch) for batch in loader] for _ in range(count)]


def _same_batches(a, b) -> bool:
    return len(a) == len(b) and all(
        len(x) == len(y) and all(len(p) == len(q) and all(torch.equal(s, t) for s, t in zip(p, q))
                                 for p, q in zip(x, y)) for x, y in zip(a, b))


# -- which records a shard holds -----------------------------------------------------------------
def test_shard_ranges_partition_the_records():
    for n, count in ((10, 3), (7, 7), (1000, 12)):
        ranges = [shard_range(n, k, count) for k in range(count)]
        assert [i for r in ranges for i in r] == list(range(n))
        assert max(map(len, ranges)) - min(map(len, ranges)) <= 1
    with pytest.raises(ValueError, match="empty"):
        shard_range(2, 0, 3)
    with pytest.raises(ValueError, match="K < N"):
        shard_range(10, 3, 3)
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "1", "a/b", "-1/3"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)


def test_shard_files_are_put_in_k_order(tmp_path):
    names = [f"t-{k}-of-12.beton" for k in range(12)]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    expected = [str(tmp_path / n) for n in names]
    # the glob's name order puts t-10 and t-11 before t-2; K order wins, for lists too
    assert shard_paths(str(tmp_path / "t-*-of-12.beton")) == expected
    assert shard_paths(expected[::-1]) == expected
    # other names: a glob is sorted by name, a list keeps its order
    for name in ("b.beton", "a.beton"):
        (tmp_path / name).write_bytes(b"")
    assert shard_paths(str(tmp_path / "[ab].beton")) == [str(tmp_path / "a.beton"),
                                                        str(tmp_path / "b.beton")]
    assert shard_paths([str(tmp_path / "b.beton"), str(tmp_path / "a.beton")]) == \
        [str(tmp_path / "b.beton"), str(tmp_path / "a.beton")]


def test_bad_shard_sets_name_the_file(tmp_path):
    for name in ("t-0-of-3.beton", "t-2-of-3.beton", "t-1-of-4.beton", "u-1-of-3.beton"):
        (tmp_path / name).write_bytes(b"")
    p = lambda name: str(tmp_path / name)  # noqa: E731
    with pytest.raises(ValueError, match=r"t-K-of-3\.beton: shard 1 of 3 is missing"):
        shard_paths(p("t-*-of-3.beton"))
    with pytest.raises(ValueError, match=r"t-1-of-4\.beton: a shard of 4 where .*t-0-of-3"):
        shard_paths([p("t-0-of-3.beton"), p("t-1-of-4.beton")])
    with pytest.raises(ValueError, match=r"u-1-of-3\.beton: not of the same shard set"):
        shard_paths([p("t-0-of-3.beton"), p("u-1-of-3.beton"), p("t-2-of-3.beton")])
    with pytest.raises(ValueError, match="given twice"):
        shard_paths([p("t-0-of-3.beton"), p("t-0-of-3.beton")])
    with pytest.raises(FileNotFoundError, match="no file matches"):
        shard_paths(p("v-*-of-3.beton"))


# -- Reader ------------------------------------------------------------------------------------
def test_reader_on_shards_reads_every_value_of_the_single_file(files):
    single, shards, _ = files
    with Reader(single) as one, Reader(shards) as many, \
            Reader(os.path.join(os.path.dirname(shards[0]), "train-*-of-3.beton")) as globbed:
        assert isinstance(many, ShardedReader) and many.paths == shards == globbed.paths
        assert len(many) == len(globbed) == N
        assert [s.first_sample for s in many.shards] == [0, 24, 48]
        assert all(s.offset % PAGE == 0 for s in many.shards)
        for i in range(N):
            assert many.read(i, "label") == one.read(i, "label")
            assert np.array_equal(many.read(i, "image"), one.read(i, "image")), i
            assert np.array_equal(many.payload(i, "image"), one.payload(i, "image")), i
            assert many.original_size(i, "image") == one.original_size(i, "image")
        assert np.array_equal(many.column("image")["mode"], one.column("image")["mode"])
        for a, b in zip(many.image_sizes("image"), one.image_sizes("image")):
            assert np.array_equal(a, b)
        assert many.shard_of(30) == (many.shards[1], 6)
        with pytest.raises(IndexError):
            many.read(N, "label")
        # the pointers index the one combined array, as kernels use them
        ptrs, sizes = many.payload_ptrs("image"), many.payload_sizes("image")
        assert bytes(many.data[int(ptrs[50]):int(ptrs[50] + sizes[50])]) == \
            bytes(one.payload(50, "image"))


def test_reader_on_shards_in_memory_and_after_close(files):
    single, shards, _ = files
    with Reader(single) as one:
        expected = [one.read(i, "image") for i in (0, 40, 71)]
    many = Reader(shards)
    view = many.payload(40, "image")
    many.load_into_memory()
    assert [np.array_equal(many.read(i, "image"), e) for i, e in zip((0, 40, 71), expected)] \
        == [True] * 3
    many.close()
    del many
    gc.collect()
    # a view taken before close keeps its file mapped
    assert bytes(view) == bytes(Reader(single).payload(40, "image"))


def test_inconsistent_or_corrupt_shards_are_refused_naming_the_file(files, records, tmp_path):
    _, shards, _ = files
    other_fields = tmp_path / "x.beton"
    write_indexed_dataset(records, str(other_fields),
                          {"image": RGBImageField(write_mode="raw"), "label": IntField()},
                          page_size=PAGE, progress=False, shard=(1, 3))
    with pytest.raises(FormatError, match=r"x\.beton: field 'image' has other settings"):
        Reader([shards[0], str(other_fields)])
    extra_field = tmp_path / "y.beton"
    write_indexed_dataset([(r[1],) for r in records], str(extra_field), {"label": IntField()},
                          page_size=PAGE, progress=False)
    with pytest.raises(FormatError, match=r"y\.beton: fields \['label'\] differ"):
        Reader([shards[0], str(extra_field)])
    big_pages = tmp_path / "z.beton"
    write_indexed_dataset(records[:5], str(big_pages), _fields(), page_size=PAGE * 2,
                          progress=False)
    with pytest.raises(FormatError, match=r"z\.beton: page size 4194304 differs"):
        Reader([shards[0], str(big_pages)])
    truncated = tmp_path / "train-1-of-3.beton"
    shutil.copy(shards[1], truncated)
    with open(truncated, "r+b") as f:
        f.truncate(os.path.getsize(truncated) - 10)
    with pytest.raises(FormatError, match=r"train-1-of-3\.beton: .*allocation table"):
        Reader([shards[0], str(truncated), shards[2]])


# -- Loader --------------------------------------------------------------------------------------
@pytest.mark.parametrize("order", ["sequential", "random"])
def test_loader_on_shards_matches_the_single_file(files, order):
    single, shards, _ = files
    reference = _epochs(_loader(single, order=order, seed=3))
    assert _same_batches(_epochs(_loader(shards, order=order, seed=3)), reference)
    assert _same_batches(_epochs(_loader(shards, order=order, seed=3, os_cache=False,
                                         num_workers=0)), reference)


def test_quasi_random_on_shards_matches_the_merged_file(files):
    _, shards, merged = files
    glob = os.path.join(os.path.dirname(shards[0]), "train-*-of-3.beton")
    reference = _epochs(_loader(merged, order="quasi_random", seed=4))
    assert _same_batches(_epochs(_loader(glob, order="quasi_random", seed=4)), reference)
    # not a trivial order: it differs from sequential order
    sequential = _epochs(_loader(merged, order="sequential", seed=4), 1)[0]
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(reference[0], sequential))


def test_resume_from_a_single_file_state_on_shards(files):
    single, shards, _ = files
    uninterrupted = _epochs(_loader(single, order="random", seed=9))
    first = _loader(single, order="random", seed=9)
    it = iter(first)
    [next(it) for _ in range(3)]
    state = first.state_dict()
    del it
    resumed = _loader(shards, order="random", seed=9)
    resumed.load_state_dict(state)
    rest = _epochs(resumed, 2)
    assert _same_batches([rest[0]], [uninterrupted[0][3:]])
    assert _same_batches([rest[1]], [uninterrupted[1]])


def test_distributed_ranks_on_shards_get_the_single_files_samples(files, records, tmp_path):
    """Two gloo ranks on the shard set see, per epoch, the labels of their blocks of the single
    file's epoch order (fastdata.order.shard of a one-process Loader's order on that file)."""
    import socket
    import torch.multiprocessing as mp
    from test_loader import _rank_main   # Loader(batch_size=5, seed=3, distributed=True)
    from fastdata.order import shard
    single, shards, _ = files
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank_main, args=(2, shards, port, "random", True, str(tmp_path)), nprocs=2,
             join=True)
    labels = np.array([r[1] for r in records])
    one_process = Loader(single, batch_size=5, order="random", seed=3,
                         pipelines={"image": None})
    for rank in range(2):
        got = np.load(tmp_path / f"rank{rank}.npy")
        for epoch in range(2):
            block = shard(one_process.epoch_indices(epoch), rank, 2, drop_last=True)
            expected = labels[block[:len(block) // 5 * 5]]     # whole batches of 5
            assert np.array_equal(got[epoch], expected), (rank, epoch)


# -- command line: write --shard -----------------------------------------------------------------
def test_cli_writes_shards_that_hold_the_whole_write(tmp_path, capsys):
    root = make_imagenet_like(str(tmp_path / "inet"), classes=3, per_class=4, val_per_class=1)
    whole = str(tmp_path / "whole.beton")
    assert main(["write", "imagenet", "--data-dir", root, "--out", whole, "--quiet"]) == 0
    shards = [str(tmp_path / f"s-{k}-of-2.beton") for k in range(2)]
    for k, out in enumerate(shards):
        assert main(["write", "imagenet", "--data-dir", root, "--out", out, "--quiet",
                     "--shard", f"{k}/2"]) == 0
    capsys.readouterr()
    with Reader(whole) as one, Reader(shards) as many, Reader(shards[1]) as second:
        assert len(one) == len(many) == 12 and len(second) == 6
        # shard 1 holds records 6..11 (classes 1 and 2), labelled from the full class list
        assert [second.read(i, "label") for i in range(6)] == [1, 1, 2, 2, 2, 2]
        for i in range(12):
            assert many.read(i, "label") == one.read(i, "label")
            assert bytes(many.payload(i, "image")) == bytes(one.payload(i, "image"))
    assert main(["inspect", str(tmp_path / "s-*-of-2.beton")]) == 0
    assert re.search(r"samples:\s+12\n", capsys.readouterr().out)
    assert main(["write", "imagenet", "--data-dir", root, "--out", str(tmp_path / "x.beton"),
                 "--shard", "2/2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "K must be in [0, N)" in err[0]
    assert not (tmp_path / "x.beton").exists()
