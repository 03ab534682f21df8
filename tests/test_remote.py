"""Remote .beton files (fastdata/remote.py) against a real S3 server (moto, on 127.0.0.1) reached
with s3fs as a user would, faults injected by a proxy in between (tests/remote_servers.py)."""
import importlib
import os
import threading
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
importlib.import_module("s3fs")   # the "remote" extra: missing, these tests fail, not skip

from fastdata import DatasetWriter, IntField, Loader, Reader, RGBImageField  # noqa: E402
from fastdata.demo import synthetic_photo  # noqa: E402
from fastdata.ops import (IntDecoder, RandomHorizontalFlip, RandomResizedCrop,  # noqa: E402
                          Squeeze, ToTensor, ToTorchImage)
from fastdata.remote import RemoteError, RemotePageError, RemoteSettings  # noqa: E402
from remote_servers import FaultProxy, MotoServer, storage_options  # noqa: E402

N = 240
PAGE = 1 << 21
# timeout_s: long enough that no answer of the loaded test machine times out unless delayed.
FAST = RemoteSettings(timeout_s=5.0, retries=4, backoff_s=0.01, fetch_threads=4, ahead_pages=3)


@pytest.fixture(scope="module")
def beton(tmp_path_factory):
    """Raw images (about 36 KB each: 5 data pages of 2 MiB), label = sample index."""
    path = str(tmp_path_factory.mktemp("remote") / "train.beton")
    rng = np.random.default_rng(0)
    samples = [(synthetic_photo(np.random.default_rng(i), int(rng.integers(90, 110)), 120), i)
               for i in range(N)]
    DatasetWriter(path, {"image": RGBImageField(write_mode="raw"), "label": IntField()},
                  page_size=PAGE, num_workers=1, progress=False).from_indexed_dataset(samples)
    return path


@pytest.fixture(scope="module")
def s3(beton):
    server = MotoServer()
    try:
        url = server.upload(beton, "bucket", "train.beton")
        yield server, url
    finally:
        server.stop()


@pytest.fixture
def proxy(s3):
    proxy = FaultProxy(s3[0].port, delay_s=FAST.timeout_s + 1)
    yield proxy
    proxy.stop()


def make_loader(path, **kwargs):
    kwargs.setdefault("batch_size", 16)
    kwargs.setdefault("num_workers", 2)
    kwargs.setdefault("order", "quasi_random")
    kwargs.setdefault("seed", 3)
    return Loader(path, pipelines={
        "image": [RandomResizedCrop(32), RandomHorizontalFlip(), ToTensor(), ToTorchImage()],
        "label": [IntDecoder(), ToTensor(), Squeeze()]}, **kwargs)


def epoch(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def assert_same_epochs(a, b):
    assert len(a) == len(b) and len(a) > 0
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)


def fastdata_threads():
    return [t.name for t in threading.enumerate() if t.name.startswith("fastdata")]


def test_reader_over_s3_reads_what_a_local_reader_reads(beton, s3):
    server, url = s3
    local = Reader(beton)
    with Reader(url, storage_options=storage_options(server.url)) as remote:
        assert remote.remote.num_pages == -(-os.path.getsize(beton) // PAGE)
        for i in range(N):
            image, label = remote[i]
            assert label == i and np.array_equal(image, local[i][0])
        # every page once: open's pages, then each data page the reads touched
        assert remote.remote.stats.bytes_fetched == os.path.getsize(beton)


def test_loader_over_s3_gives_the_local_batches_and_reads_the_file_once(beton, s3, tmp_path):
    server, url = s3
    size = os.path.getsize(beton)
    local = make_loader(beton)
    expected = [epoch(local), epoch(local)]
    with make_loader(url, storage_options=storage_options(server.url), cache_dir=tmp_path,
                     remote_settings=FAST) as loader:
        stats = loader.reader.remote.stats
        assert_same_epochs(epoch(loader), expected[0])
        assert stats.bytes_fetched == size and stats.retries == 0
        assert_same_epochs(epoch(loader), expected[1])
        assert stats.bytes_fetched == size          # the second epoch read no remote byte
    # A new process-like Loader on the same cache_dir reads the pages from there.
    with make_loader(url, storage_options=storage_options(server.url), cache_dir=tmp_path,
                     remote_settings=FAST) as loader:
        assert_same_epochs(epoch(loader), expected[0])
        stats = loader.reader.remote.stats
        assert stats.pages_fetched == 0 and stats.pages_from_cache_dir == loader.reader.remote.num_pages
    assert fastdata_threads() == []


def test_memory_cache_size_is_respected_and_batches_unchanged(beton, s3):
    server, url = s3
    expected = epoch(make_loader(beton))
    limit = 2 * PAGE
    with make_loader(url, storage_options=storage_options(server.url), cache_size=limit,
                     remote_settings=FAST) as loader:
        assert_same_epochs(epoch(loader), expected)
        pages = loader.reader.remote
        assert pages.stats.evictions > 0
        # After the epoch nothing is pinned by batches: only open's pages may exceed the limit.
        unpinned = pages.present & ~pages.pinned_for_good
        assert pages.pins.sum() == 0 and unpinned.sum() * PAGE <= limit


def test_cache_dir_size_limit_evicts_page_files(beton, s3, tmp_path):
    server, url = s3
    limit = 2 * PAGE
    with make_loader(url, storage_options=storage_options(server.url), cache_dir=tmp_path,
                     cache_size=limit, remote_settings=FAST) as loader:
        epoch(loader)
        directory = loader.reader.remote.cache_dir
    files = [f for f in os.listdir(directory)]
    assert all(f.endswith(".page") for f in files)       # no temporary file left behind
    assert 0 < sum(os.path.getsize(os.path.join(directory, f)) for f in files) <= limit


@pytest.mark.parametrize("mode", ["503", "drop", "truncate", "delay"])
def test_transient_faults_are_retried(beton, s3, proxy, mode):
    server, url = s3
    expected = epoch(make_loader(beton))
    data_page = (os.path.getsize(beton) // PAGE // 2) * PAGE    # a page of images
    proxy.add_fault(mode, 2, range_start=data_page)
    with make_loader(url, storage_options=storage_options(proxy.url),
                     remote_settings=FAST) as loader:
        assert_same_epochs(epoch(loader), expected)
        stats = loader.reader.remote.stats
    assert [m for m, _ in proxy.served] == [mode, mode]
    if mode != "drop":     # a dropped keep-alive connection may be retried inside aiohttp
        assert stats.retries == 2 and len(stats.errors) == 2
    if mode == "delay":
        assert stats.errors == [f"no answer within {FAST.timeout_s} s"] * 2


@pytest.mark.parametrize("mode", ["503", "truncate", "delay"])
def test_a_page_that_never_arrives_raises_in_the_training_loop(beton, s3, proxy, mode):
    server, url = s3
    page = os.path.getsize(beton) // PAGE // 2
    proxy.add_fault(mode, 1000, range_start=page * PAGE)
    settings = RemoteSettings(timeout_s=1.0, retries=2, backoff_s=0.01, ahead_pages=2)
    loader = make_loader(url, storage_options=storage_options(proxy.url),
                         remote_settings=settings)
    with pytest.raises(RemotePageError) as info:
        epoch(loader)
    err = info.value
    assert (err.url, err.page, err.start, err.stop) == (url, page, page * PAGE, (page + 1) * PAGE)
    assert f"page {page}, bytes [{page * PAGE}, {(page + 1) * PAGE})" in str(err)
    assert "3 attempts failed" in str(err)
    assert fastdata_threads() == []          # the epoch's threads are stopped
    assert len(proxy.served) == 3            # exactly the attempts, no fetch after the error
    loader.close()


def test_short_page_from_the_server_is_an_error(beton, tmp_path):
    """A file that is shorter than its size said (a short range read) is named, not read."""
    import fsspec
    fs = fsspec.filesystem("memory")
    with open(beton, "rb") as f:
        data = f.read()
    fs.pipe("/short/train.beton", data)
    reader = Reader("memory://short/train.beton", remote_settings=FAST)
    page = int(np.flatnonzero(~reader.remote.present)[0])       # a data page not read yet
    fs.pipe("/short/train.beton", data[:page * PAGE + 100])      # truncated after open
    index = int(np.flatnonzero(reader.payload_ptrs("image") // PAGE == page)[0])
    with pytest.raises(RemotePageError, match="arrived short"):
        reader[index]
    reader.close()


def test_a_missing_file_is_a_clear_error(s3):
    server, url = s3
    with pytest.raises(RemoteError, match="no such file"):
        Reader(url + ".missing", storage_options=storage_options(server.url),
               remote_settings=FAST)


def test_corrupt_cached_page_is_fetched_again(beton, s3, tmp_path):
    server, url = s3
    expected = epoch(make_loader(beton))
    options = storage_options(server.url)
    with make_loader(url, storage_options=options, cache_dir=tmp_path,
                     remote_settings=FAST) as loader:
        epoch(loader)
        directory = loader.reader.remote.cache_dir
    victim = os.path.join(directory, sorted(os.listdir(directory))[2])
    with open(victim, "r+b") as f:
        f.truncate(1000)
    with make_loader(url, storage_options=options, cache_dir=tmp_path,
                     remote_settings=FAST) as loader:
        assert_same_epochs(epoch(loader), expected)
        stats = loader.reader.remote.stats
        assert stats.corrupt_cache_files == 1 and stats.pages_fetched == 1
    assert os.path.getsize(victim) == PAGE


_SHARED_READER = """
import sys, numpy as np
sys.path.insert(0, {tests!r})
from fastdata import Reader
from remote_servers import storage_options
r = Reader({url!r}, storage_options=storage_options({endpoint!r}), cache_dir={cache!r})
labels = [r[i][1] for i in range({n})]
assert labels == list(range({n})), labels
sums = [int(r[i][0].sum(dtype=np.int64)) for i in range({n})]
print(sum(sums))
"""


def test_processes_share_a_cache_dir_safely(beton, s3, tmp_path):
    import subprocess
    import sys
    server, url = s3
    local = Reader(beton)
    want = sum(int(local[i][0].sum(dtype=np.int64)) for i in range(N))
    script = _SHARED_READER.format(tests=os.path.dirname(__file__), url=url, endpoint=server.url,
                                   cache=str(tmp_path), n=N)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert int(out.strip()) == want
    (directory,) = os.listdir(tmp_path)
    files = os.listdir(tmp_path / directory)
    assert all(f.endswith(".page") for f in files)
    assert all(os.path.getsize(tmp_path / directory / f) in (PAGE, os.path.getsize(beton) % PAGE)
               for f in files)


def test_random_order_warns_once_what_it_costs(beton, s3):
    import fastdata.remote as remote
    server, url = s3
    remote._WARNED_RANDOM = False
    with pytest.warns(UserWarning, match="quasi_random"):
        make_loader(url, order="random", storage_options=storage_options(server.url),
                    remote_settings=FAST).close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_loader(url, order="random", storage_options=storage_options(server.url),
                    remote_settings=FAST).close()


@pytest.mark.parametrize("num_workers", [0, 2])
def test_break_out_of_a_remote_epoch_stops_its_threads(beton, s3, num_workers):
    import gc
    server, url = s3
    local = make_loader(beton, num_workers=num_workers)
    epoch(local)
    second = epoch(local)
    with make_loader(url, storage_options=storage_options(server.url), remote_settings=FAST,
                     num_workers=num_workers) as loader:
        for k, _ in enumerate(loader):
            if k == 2:
                break
        gc.collect()
        assert fastdata_threads() == []
        assert loader.reader.remote.pins.sum() == 0
        assert_same_epochs(epoch(loader), second)     # the next epoch is whole


def test_records_decoders_check_at_construction_are_fetched_first(tmp_path):
    """TeacherTargets checks every top-k record when bound: over a URL it sees the real records
    (fetched before binding), not unfetched zeros, so a bad class id is refused as locally."""
    from fastdata.fields.topk import TopKField
    from fastdata.ops.targets import TeacherTargets
    num_classes, k = 20, 4
    samples = [((np.array([(i + j) % (num_classes - 1) for j in range(k)]),
                 np.full(k, 0.2)), i) for i in range(200)]
    samples[10] = ((np.array([num_classes - 1, 0, 1, 2]), np.full(k, 0.2)), 10)   # page 1
    path = str(tmp_path / "teacher.beton")
    DatasetWriter(path, {"teacher": TopKField(k), "image": RGBImageField(write_mode="raw"),
                         "label": IntField()}, page_size=PAGE, progress=False) \
        .from_indexed_dataset([(t, synthetic_photo(np.random.default_rng(i), 60, 80), i)
                               for t, i in samples])
    for source in (path, "file://" + path):
        with pytest.raises(ValueError, match="num_classes"):
            Loader(source, batch_size=8, pipelines={
                "teacher": [TeacherTargets(num_classes - 1)], "image": None, "label": None})
        loader = Loader(source, batch_size=8, order="quasi_random", pipelines={
            "teacher": [TeacherTargets(num_classes)], "image": None, "label": None})
        first = next(iter(loader))[0].copy()        # no ToTensor: numpy, as in FFCV
        loader.close()
        if source == path:
            expected = first
    assert np.array_equal(first, expected)


def test_temporary_page_files_of_killed_processes_are_removed(beton, s3, tmp_path):
    import subprocess
    import sys
    server, url = s3
    with Reader(url, storage_options=storage_options(server.url), cache_dir=tmp_path,
                remote_settings=FAST) as reader:
        directory = reader.remote.cache_dir
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead, alive = int(gone.stdout), os.getpid()
    stale = os.path.join(directory, f".000000003.abc.{dead}.0123abcd.tmp")
    mine = os.path.join(directory, f".000000004.def.{alive}.4567cdef.tmp")
    for name in (stale, mine):
        with open(name, "wb") as f:
            f.write(b"half a page")
    Reader(url, storage_options=storage_options(server.url), cache_dir=tmp_path,
           remote_settings=FAST).close()
    assert not os.path.exists(stale)       # its writer is dead
    assert os.path.exists(mine)            # a live process may still be writing it


def test_os_cache_false_fetches_the_whole_file_at_construction(beton, s3):
    server, url = s3
    expected = epoch(make_loader(beton))
    with make_loader(url, os_cache=False, cache_size=PAGE,
                     storage_options=storage_options(server.url), remote_settings=FAST) as loader:
        pages = loader.reader.remote
        assert pages.present.all() and pages.stats.bytes_fetched == os.path.getsize(beton)
        assert_same_epochs(epoch(loader), expected)
        assert pages.present.all() and pages.stats.evictions == 0   # kept, whatever cache_size
