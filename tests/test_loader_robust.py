"""The Loader under stress: epochs stopped from another thread, close() releasing the file, and
on_error="skip" replacing samples that fail to decode."""
import logging
import os
import sys
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastdata  # noqa: E402
from fastdata import (BytesField, DatasetWriter, FloatField, IntField, JSONField,  # noqa: E402
                      Loader, NDArrayField, RGBImageField)
from fastdata.demo import synthetic_photo  # noqa: E402
from fastdata.ops import (IntDecoder, RandomHorizontalFlip, RandomResizedCrop,  # noqa: E402
                          Squeeze, ToTensor, ToTorchImage)

N = 48
WAIT_S = 60          # a bound on every wait, so a broken loader fails the test, never hangs it


def _write(path, n=N):
    rows = [(synthetic_photo(np.random.default_rng((5, i)), 40 + i % 17, 44 + i % 13), i,
             {"i": i}) for i in range(n)]
    DatasetWriter(str(path), {"image": RGBImageField(write_mode="jpg", jpeg_quality=90),
                              "label": IntField(), "meta": fastdata.JSONField()},
                  page_size=1 << 21, num_workers=1, progress=False).from_indexed_dataset(rows)
    return str(path)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("robust") / "clean.beton")


# -- corrupt records: corruption that raises SampleError in the loader today -------------------

BAD_JPEG_GARBAGE = (5, 17)     # the whole JPEG payload zeroed: no JPEG header at all
BAD_JPEG_SIZE = (30,)          # the JPEG's SOF says 300 x 400, its record says otherwise
BAD_JSON = (11,)               # the JSON payload is not UTF-8
BAD = set(BAD_JPEG_GARBAGE + BAD_JPEG_SIZE + BAD_JSON)


def _corrupt(src, dst, garbage=BAD_JPEG_GARBAGE, size=BAD_JPEG_SIZE, json=BAD_JSON):
    data = bytearray(open(src, "rb").read())
    with fastdata.Reader(src) as reader:
        where = {name: (reader.payload_ptrs(name).astype(int), reader.payload_sizes(name)
                        .astype(int)) for name in ("image", "meta")}
    ptrs, sizes = where["image"]
    for i in garbage:
        data[ptrs[i]:ptrs[i] + sizes[i]] = bytes(sizes[i])
    for i in size:
        sof = data.index(b"\xff\xc0", ptrs[i], ptrs[i] + sizes[i]) + 5
        data[sof:sof + 4] = (300).to_bytes(2, "big") + (400).to_bytes(2, "big")
    ptrs, sizes = where["meta"]
    for i in json:
        data[ptrs[i]:ptrs[i] + sizes[i]] = b"\xff" * sizes[i]
    with open(dst, "wb") as f:
        f.write(bytes(data))
    return str(dst)


@pytest.fixture(scope="module")
def corrupt(clean, tmp_path_factory):
    path = _corrupt(clean, tmp_path_factory.mktemp("robust") / "corrupt.beton")
    with fastdata.Reader(path) as reader:      # each bad record does fail today
        for i in BAD_JPEG_GARBAGE + BAD_JPEG_SIZE:
            with pytest.raises(fastdata.SampleError):
                reader.read(i, "image")
        for i in BAD_JSON:
            with pytest.raises(fastdata.SampleError):
                reader.read(i, "meta")
    return path


def _loader(path, **kwargs):
    kwargs.setdefault("batch_size", 8)
    kwargs.setdefault("num_workers", 2)
    kwargs.setdefault("order", "random")
    kwargs.setdefault("seed", 3)
    return Loader(path, pipelines={
        "image": [RandomResizedCrop(24), RandomHorizontalFlip(), ToTensor(), ToTorchImage()],
        "label": [IntDecoder(), ToTensor(), Squeeze()],
        "meta": [fastdata.ops.JSONDecoder()]}, **kwargs)


def _epoch(loader):
    return [(images.clone(), labels.clone(), list(metas)) for images, labels, metas in loader]


def _same(a, b):
    return len(a) == len(b) and all(
        torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) and x[2] == y[2]
        for x, y in zip(a, b))


# -- on_error -------------------------------------------------------------------------------------

def test_on_error_raise_is_the_default_and_names_the_sample(corrupt):
    loader = _loader(corrupt)
    assert loader.on_error == "raise"
    baseline = threading.active_count()
    with pytest.raises(fastdata.SampleError) as err:
        _epoch(loader)
    assert err.value.index in BAD and err.value.field in ("image", "meta")
    assert threading.active_count() <= baseline
    with pytest.raises(ValueError, match="on_error"):
        _loader(corrupt, on_error="ignore")


def _substituted_order(loader, epoch, batch_size=8):
    """The epoch's order with each skipped position holding its replacement."""
    order = loader.epoch_indices(epoch).copy()
    for skip in loader.skipped:
        if skip.epoch == epoch:
            order[skip.batch * batch_size + skip.position] = skip.replacement
    return order


def test_skip_replaces_bad_samples_with_whole_good_samples(corrupt, clean):
    loader = _loader(corrupt, on_error="skip")
    batches = _epoch(loader)
    assert len(batches) == N // 8 and all(len(b[1]) == 8 for b in batches)   # batches stay full
    assert {s.index for s in loader.skipped} == BAD       # every bad sample is in the skip list
    order = loader.epoch_indices(0)
    for s in loader.skipped:
        assert (s.field == "meta") == (s.index in BAD_JSON) and s.epoch == 0 and s.reason
        assert s.replacement not in BAD
    first_failures = {(s.batch, s.position) for s in loader.skipped
                      if order[s.batch * 8 + s.position] == s.index}
    assert len(first_failures) == len(BAD)                # one replaced position per bad sample

    # The batches are those of the uncorrupted file with each bad sample's position holding its
    # replacement: good samples unchanged, and a replaced position's label, JSON and pixels (with
    # the crop and flip drawn for the replacement's index) all from the replacement.
    substituted = _substituted_order(loader, 0)
    assert not BAD & set(substituted.tolist())
    labels = torch.cat([b[1] for b in batches])
    assert labels.tolist() == substituted.tolist()
    assert [m for b in batches for m in b[2]] == [{"i": int(i)} for i in substituted]
    same_order = _loader(clean, indices=substituted, order="sequential")
    assert _same(batches, _epoch(same_order))
    good = np.array([int(i) not in BAD for i in order])
    reference = _epoch(_loader(clean))
    assert torch.equal(torch.cat([b[0] for b in batches])[good],
                       torch.cat([b[0] for b in reference])[good])


def test_skip_with_cutmix_pasted_while_decoding(corrupt, clean):
    """CutMix draws its boxes before decoding and the decoder pastes into partners: a batch
    built again with a replacement is drawn and pasted again, as the substituted order gives."""
    from fastdata.ops import Mixup

    def make(path, **kwargs):
        kwargs.setdefault("order", "random")
        return Loader(path, batch_size=8, seed=3, pipelines={
            "image": [RandomResizedCrop(24), ToTensor(), ToTorchImage()],
            "label": [IntDecoder(), ToTensor()], "meta": None},
            batch_ops=[Mixup(0.0, 1.0, mode="elem", num_classes=N)], **kwargs)

    loader = make(corrupt, on_error="skip", num_workers=1, batches_ahead=1)
    assert loader._pre_decode, "CutMix should paste while decoding here"
    batches = [tuple(t.clone() for t in b) for b in loader]
    assert {s.index for s in loader.skipped} == set(BAD_JPEG_GARBAGE + BAD_JPEG_SIZE)
    again = make(corrupt, on_error="skip", num_workers=3, batches_ahead=2)
    assert all(torch.equal(a, b) for x, y in zip(batches, again) for a, b in zip(x, y))
    same_order = make(clean, indices=_substituted_order(loader, 0), order="sequential")
    assert all(torch.equal(a, b) for x, y in zip(batches, same_order) for a, b in zip(x, y))


def test_skip_gives_the_same_batches_whatever_the_threads(corrupt):
    reference = _loader(corrupt, on_error="skip", num_workers=1, batches_ahead=1)
    expected = _epoch(reference) + _epoch(reference)
    for workers, ahead in ((3, 2), (2, 4)):
        loader = _loader(corrupt, on_error="skip", num_workers=workers, batches_ahead=ahead)
        assert _same(_epoch(loader) + _epoch(loader), expected)
        assert loader.skipped == reference.skipped
    # Another epoch replaces with other samples (the draw is keyed by the epoch too).
    chosen = [[s.replacement for s in reference.skipped if s.epoch == e] for e in (0, 1)]
    assert chosen[0] and chosen[1] and chosen[0] != chosen[1]


def test_skip_resumes_exactly(corrupt):
    whole = _loader(corrupt, on_error="skip")
    expected = _epoch(whole)
    first = _loader(corrupt, on_error="skip")
    it = iter(first)
    for _ in range(2):
        next(it)
    state = first.state_dict()
    first.close()
    resumed = _loader(corrupt, on_error="skip")
    resumed.load_state_dict(state)
    assert _same(_epoch(resumed), expected[2:])
    assert resumed.skipped == [s for s in whole.skipped if s.batch >= 2]


def test_each_skip_is_logged_once(corrupt, caplog):
    loader = _loader(corrupt, on_error="skip")
    with caplog.at_level(logging.WARNING, logger="fastdata"):
        _epoch(loader)
    lines = [r.getMessage() for r in caplog.records if r.name == "fastdata"]
    assert len(lines) == len(loader.skipped) >= len(BAD)    # more if a replacement was bad
    for skip in loader.skipped:      # (a bad replacement is skipped too, and logged too)
        expected = (f"sample {skip.index}, field {skip.field!r}: {skip.reason}; replaced by "
                    f"sample {skip.replacement} (epoch 0, batch {skip.batch}, position "
                    f"{skip.position})")
        assert any(expected in line for line in lines), skip


def test_skip_gives_up_on_a_file_of_bad_samples(clean, tmp_path):
    path = _corrupt(clean, tmp_path / "all_bad.beton", garbage=range(N), size=(), json=())
    with pytest.raises(fastdata.SampleError, match="on_error='skip' gave up") as err:
        _epoch(_loader(path, on_error="skip"))
    assert err.value.field == "image"


# -- an epoch stopped from another thread ---------------------------------------------------------

class GatedLabels(IntDecoder):
    """IntDecoder whose batches from ``from_batch`` on wait for ``gate``: a producer as slow as
    the test wants."""

    def __init__(self, from_batch):
        super().__init__()
        self.from_batch = from_batch
        self.gate, self.reached = threading.Event(), threading.Event()

    def prepare(self, ctx, out):
        if ctx.batch >= self.from_batch:
            self.reached.set()
            self.gate.wait(WAIT_S)
        super().prepare(ctx, out)


def _in_next(thread):
    """Whether ``thread`` is waiting inside EpochIterator.__next__."""
    frame = sys._current_frames().get(thread.ident)
    while frame is not None:
        if frame.f_code.co_name == "__next__" and \
                frame.f_code.co_filename.endswith(os.path.join("fastdata", "loader.py")):
            return True
        frame = frame.f_back
    return False


@pytest.mark.parametrize("stopper", ["close", "iter", "load_state_dict"])
def test_a_consumer_waiting_for_a_batch_wakes_when_another_thread_stops_the_epoch(clean,
                                                                                  stopper):
    # Batch 0 is queued once batch 1 is under way; batch 2 waits at the gate, so batch 1 never
    # comes: the consumer waits in next() until another thread stops the epoch.
    labels = GatedLabels(from_batch=2)
    loader = Loader(clean, batch_size=4, num_workers=1, pipelines={
        "image": None, "meta": None, "label": [labels, ToTensor(), Squeeze()]})
    state = loader.state_dict()
    outcome = {}

    taken = []

    def consume():
        try:
            for batch in loader:
                taken.append(batch)
            outcome["taken"] = len(taken)
        except BaseException as err:        # noqa: BLE001 - reported by the assertion below
            outcome["error"] = err

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    assert labels.reached.wait(WAIT_S)
    for _ in range(WAIT_S * 100):           # until the consumer, holding batch 0, waits for 1
        if len(taken) == 1 and _in_next(consumer):
            break
        consumer.join(0.01)
    assert len(taken) == 1 and _in_next(consumer)

    stop = {"close": loader.close, "iter": lambda: iter(loader),
            "load_state_dict": lambda: loader.load_state_dict(state)}[stopper]
    stopping = threading.Thread(target=stop, daemon=True)
    stopping.start()
    consumer.join(WAIT_S)                   # wakes even while the producer is still busy
    woke = not consumer.is_alive()
    labels.gate.set()
    stopping.join(WAIT_S)
    assert woke, f"the consumer still waits for a batch after {stopper}() in another thread"
    assert not stopping.is_alive()
    assert outcome == {"taken": 1}          # its epoch ended (StopIteration), with no error
    position = {"close": (0, 1), "iter": (1, 0), "load_state_dict": (0, 0)}[stopper]
    assert (loader.state_dict()["epoch"], loader.state_dict()["batch"]) == position
    loader.close()


# -- close() releases the file --------------------------------------------------------------------

def _held(path):
    """This process's memory maps and open descriptors of ``path``."""
    real = os.path.realpath(path)
    maps = [line for line in open("/proc/self/maps") if real in line]
    fds = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(real):
            fds.append(target)
    return maps, fds


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux's /proc")
@pytest.mark.parametrize("os_cache", [True, False])
def test_close_releases_the_file(tmp_path, os_cache):
    path = str(tmp_path / "every_type.beton")
    rows = [(synthetic_photo(np.random.default_rng(i), 30, 36), i, i / 2,
             np.full((2, 3), i, np.float32), bytes(range(i % 7)), {"i": i}) for i in range(24)]
    DatasetWriter(path, {"image": RGBImageField(write_mode="proportion"), "label": IntField(),
                         "f": FloatField(), "arr": NDArrayField("float32", (2, 3)),
                         "blob": BytesField(), "meta": JSONField()},
                  page_size=1 << 21, progress=False).from_indexed_dataset(rows)
    loader = Loader(path, batch_size=8, num_workers=2, os_cache=os_cache, pipelines={
        "image": [RandomResizedCrop(16)]})
    it = iter(loader)
    kept = next(it)                          # the training loop still holds a batch
    if os_cache:
        assert _held(path)[0], "the file should be memory-mapped while the loader is open"
    loader.close()
    assert _held(path) == ([], [])
    assert next(it, None) is None             # the epoch it was in has ended
    with pytest.raises(ValueError, match="closed"):
        iter(loader)
    loader.close()                            # idempotent
    assert kept[1].shape == (8, 1)            # the batch taken stays readable
    os.remove(path)                           # nothing of this process still holds its space
    assert _held(path) == ([], [])
