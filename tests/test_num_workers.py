"""num_workers means the same in the writer and the Loader, as in torch's DataLoader: -1 every
core, n > 0 that many worker threads, 0 none (the calling thread does the work)."""
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fastdata import (DatasetWriter, IntField, Loader, Reader, RGBImageField,  # noqa: E402
                      SampleError)
from fastdata.demo import synthetic_photo  # noqa: E402
from fastdata.fields.rgb_image import MODE_JPG  # noqa: E402
from fastdata.ops import (IntDecoder, RandomHorizontalFlip, RandomResizedCrop,  # noqa: E402
                          Squeeze, ToTensor, ToTorchImage)
from fastdata.ops.base import BatchOp  # noqa: E402
from fastdata.workers import default_workers, resolve_workers  # noqa: E402

N = 40


def _samples(n=N):
    return [(synthetic_photo(np.random.default_rng(i), 40 + i % 7 * 9, 50 + i % 5 * 11), i)
            for i in range(n)]


def _fastdata_threads():
    return [t.name for t in threading.enumerate() if t.name.startswith("fastdata-")]


def _write(path, num_workers, load_threads=None):
    samples = _samples()

    class Recorded(list):
        def __getitem__(self, i):
            if load_threads is not None:
                load_threads.add(threading.current_thread())
            return samples[i]

    fields = {"image": RGBImageField(write_mode="proportion", seed=2), "label": IntField()}
    return DatasetWriter(path, fields, page_size=1 << 21, num_workers=num_workers,
                         progress=False).from_indexed_dataset(Recorded(samples))


@pytest.fixture(scope="module")
def beton(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("workers") / "ds.beton")
    _write(path, 2)
    return path


def test_resolve_workers():
    assert resolve_workers(-1) == resolve_workers(None) == default_workers()
    assert resolve_workers(0) == 0 and resolve_workers(3) == 3
    for bad in (-2, 1.5, True, "2"):
        with pytest.raises((ValueError, TypeError), match="num_workers"):
            resolve_workers(bad)


def test_writer_with_no_workers_loads_in_the_calling_thread(tmp_path, beton):
    threads = set()
    _write(str(tmp_path / "zero.beton"), 0, threads)
    assert threads == {threading.current_thread()}
    a, b = Reader(beton), Reader(str(tmp_path / "zero.beton"))
    for i in range(N):
        assert np.array_equal(a.read(i, "image"), b.read(i, "image"))
        assert a.read(i, "label") == b.read(i, "label")
    threads = set()
    _write(str(tmp_path / "two.beton"), 2, threads)
    assert threading.current_thread() not in threads and len(threads) <= 2


class _RecordThread(BatchOp):
    def __init__(self, seen):
        self.seen = seen

    def __call__(self, batch, ctx):
        self.seen.add(threading.current_thread())
        self.seen.update(_fastdata_threads())      # names of any loader threads alive now
        return batch


def _loader(path, num_workers, seen, **kwargs):
    return Loader(path, batch_size=8, num_workers=num_workers, order="random", seed=4,
                  pipelines={"image": [RandomResizedCrop(32), RandomHorizontalFlip(),
                                       ToTensor(), ToTorchImage(), _RecordThread(seen)],
                             "label": [IntDecoder(), ToTensor(), Squeeze()]}, **kwargs)


def test_loader_with_no_workers_works_in_the_calling_thread(beton):
    seen = set()
    zero = _loader(beton, 0, seen)
    batches = []
    for images, labels in zero:
        assert _fastdata_threads() == []
        batches.append((images.clone(), labels.clone()))
    assert seen == {threading.current_thread()}
    # The same batches as with worker threads (and they ran elsewhere).
    seen_threaded = set()
    threaded = list(_loader(beton, 2, seen_threaded))
    assert threading.current_thread() not in seen_threaded
    assert len(threaded) == len(batches) == N // 8
    for (a, la), (b, lb) in zip(batches, threaded):
        assert torch.equal(a, b) and torch.equal(la, lb)
    # Resume and an epoch stopped half-way behave as with threads.
    it = iter(zero)
    next(it)
    it.close()
    with pytest.raises(StopIteration):
        next(it)
    zero.close()


def test_loader_with_no_workers_raises_decode_errors_in_the_caller(tmp_path):
    path = str(tmp_path / "bad.beton")
    _write(path, 1)
    reader = Reader(path)
    bad = int(np.flatnonzero(reader.column("image")["mode"] == MODE_JPG)[1])
    ptr = int(reader.payload_ptrs("image")[bad])
    size = int(reader.payload_sizes("image")[bad])
    reader.close()
    with open(path, "r+b") as f:          # a JPEG sample's bytes: zeros
        f.seek(ptr)
        f.write(b"\x00" * size)
    loader = Loader(path, batch_size=8, num_workers=0, order="sequential",
                    pipelines={"image": [RandomResizedCrop(32)], "label": [IntDecoder()]})
    with pytest.raises(SampleError) as err:
        list(loader)
    assert err.value.index == bad
    skipping = Loader(path, batch_size=8, num_workers=0, order="sequential", on_error="skip",
                      pipelines={"image": [RandomResizedCrop(32)], "label": [IntDecoder()]})
    assert sum(len(b[1]) for b in skipping) == N and _fastdata_threads() == []


def test_loader_rejects_bad_num_workers(beton):
    with pytest.raises(ValueError, match="num_workers"):
        Loader(beton, batch_size=8, num_workers=-2)


def test_cli_accepts_no_workers(tmp_path):
    from fastdata.cli import main
    data = tmp_path / "data" / "train" / "cls0"
    data.mkdir(parents=True)
    from PIL import Image
    for i, (image, _) in enumerate(_samples(6)):
        Image.fromarray(image).save(data / f"{i}.png")
    out = tmp_path / "cli.beton"
    assert main(["write", "imagenet", "--data-dir", str(tmp_path / "data"), "--out", str(out),
                 "--workers", "0", "--quiet"]) == 0
    assert len(Reader(str(out))) == 6
