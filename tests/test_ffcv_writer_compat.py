"""FFCV's writer, fields and Reader API on fastdata: FFCV code with only its imports changed.

Covers: datasets that use numpy's global RNG written exactly (worker processes), FFCV's
``from_indexed_dataset(indices, chunksize, shuffle_indices)`` and ``from_webdataset``, FFCV's
field arguments and conversions, custom fields written in FFCV's style, and FFCV's Reader
attributes.  Where FFCV itself can run (FASTDATA_FFCV_PYTHON, see test_ffcv_compat), results
are compared with FFCV's own.
"""
from __future__ import annotations

import json
import os
import signal
import tarfile
import io

import numpy as np
import pytest
import torch

from fastdata import (BytesField, DatasetWriter, FloatField, IntField, JSONField, NDArrayField,
                      Reader, RGBImageField, TorchTensorField, WriteError)
from fastdata.fields import Field
from fastdata.fields.ndarray import NDArrayField as NDArrayFieldClass
from fastdata.format import FormatError
from fastdata.ops.decoders import NDArrayDecoder
from fastdata.reader import SampleError

from test_ffcv_compat import ffcv_python, run_ffcv  # noqa: F401 - the fixture is used by name


# -- 1. datasets that use numpy's global RNG ------------------------------------------------------
class SeededRandomDataset:
    """FFCV's test datasets' pattern: ``__getitem__`` seeds numpy's global RNG and draws."""

    def __init__(self, n: int, size: int = 2048):
        self.n, self.size = n, size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        np.random.seed(i)
        return i, np.random.randn(self.size).astype("<f4")


def test_global_rng_dataset_records_equal_dataset_i(tmp_path):
    """num_workers=3, 4,096 samples: every record is exactly dataset[i].  With the samples read
    by threads of one process the seeds and draws of different samples interleave, and some
    records silently hold another sample's numbers."""
    n = 4096
    dataset = SeededRandomDataset(n)
    out = tmp_path / "rng.beton"
    DatasetWriter(out, {"index": IntField(), "value": NDArrayField(np.dtype("<f4"), (2048,))},
                  num_workers=3, progress=False).from_indexed_dataset(dataset)
    with Reader(out) as reader:
        assert len(reader) == n
        wrong = [i for i in range(n)
                 if reader[i][0] != i or not np.array_equal(reader[i][1], dataset[i][1])]
    assert wrong == []


class Unpicklable:
    def __init__(self):
        self.lock = __import__("threading").Lock()

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return (i,)


def test_spawn_workers_write_a_picklable_dataset_and_refuse_an_unpicklable_one(tmp_path):
    out = tmp_path / "spawn.beton"
    dataset = SeededRandomDataset(40, 8)
    DatasetWriter(out, {"index": IntField(), "value": NDArrayField(np.dtype("<f4"), (8,))},
                  num_workers=1, progress=False).from_indexed_dataset(
        dataset, chunksize=7, start_method="spawn")
    with Reader(out) as reader:
        assert all(np.array_equal(reader[i][1], dataset[i][1]) for i in range(40))
    with pytest.raises(WriteError, match=r"the dataset \(Unpicklable\) cannot be sent to "
                                         r"'spawn' worker processes: pickling it failed"):
        DatasetWriter(tmp_path / "no.beton", {"index": IntField()}, num_workers=2,
                      progress=False).from_indexed_dataset(Unpicklable(), start_method="spawn")
    assert not (tmp_path / "no.beton").exists()


class FlakyDataset:
    """Sample 5 raises ValueError (a bad sample), sample 9 KeyError (a bug) when asked to."""

    def __init__(self, bug: bool):
        self.bug = bug

    def __len__(self):
        return 20

    def __getitem__(self, i):
        if i == 5:
            raise ValueError("unreadable record")
        if i == 9 and self.bug:
            raise KeyError("no such key")
        return (i,)


def test_worker_process_errors_name_the_sample(tmp_path):
    out = tmp_path / "flaky.beton"
    report = DatasetWriter(out, {"index": IntField()}, num_workers=2, on_error="skip",
                           progress=False).from_indexed_dataset(FlakyDataset(False), chunksize=3)
    assert (report.num_written, [f.index for f in report.failures]) == (19, [5])
    assert report.failures[0].reason == "unreadable record"
    with Reader(out) as reader:
        assert [reader[i][0] for i in range(19)] == [i for i in range(20) if i != 5]
    with pytest.raises(WriteError, match=r"sample 5: unreadable record"):
        DatasetWriter(tmp_path / "f.beton", {"index": IntField()}, num_workers=2,
                      progress=False).from_indexed_dataset(FlakyDataset(False))
    with pytest.raises(WriteError, match=r"(?s)sample 9: KeyError: 'no such key'.*in the worker "
                                         r"process:.*raise KeyError"):
        DatasetWriter(tmp_path / "k.beton", {"index": IntField()}, num_workers=2,
                      on_error="skip", progress=False).from_indexed_dataset(FlakyDataset(True))
    assert sorted(os.listdir(tmp_path)) == ["flaky.beton", "flaky.beton.errors.tsv"]


class DyingDataset:
    def __len__(self):
        return 50

    def __getitem__(self, i):
        if i == 30:
            os.kill(os.getpid(), signal.SIGKILL)
        return (i,)


def test_a_killed_worker_process_stops_the_write_cleanly(tmp_path):
    with pytest.raises(WriteError, match="a writer worker process died"):
        DatasetWriter(tmp_path / "d.beton", {"index": IntField()}, num_workers=2,
                      progress=False).from_indexed_dataset(DyingDataset(), chunksize=5)
    assert os.listdir(tmp_path) == []


# -- 2. FFCV's writer arguments --------------------------------------------------------------------
class SinDataset:
    """FFCV's tests/test_writer.py DummyDataset."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i > self.n:
            raise IndexError()
        return (i, np.sin(i))


def test_ffcv_positional_arguments_and_indices(tmp_path):
    out = tmp_path / "pos.beton"
    # FFCV's order: DatasetWriter(fname, fields, page_size, num_workers); keywords too.
    DatasetWriter(fname=str(out), fields={"index": IntField(), "value": FloatField()},
                  page_size=1 << 21, num_workers=2, progress=False)
    writer = DatasetWriter(str(out), {"index": IntField(), "value": FloatField()}, 1 << 21, 2,
                           progress=False)
    indices = [7, 3, 3, 0]
    writer.from_indexed_dataset(SinDataset(10), indices, 1)
    with Reader(out) as reader:
        assert reader.metadata["f0"].tolist() == indices
        assert reader.metadata["f1"].tolist() == [np.sin(i) for i in indices]
        assert len(reader.alloc_table) == 0      # FFCV's test_writer checks this too
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="chunksize must be a positive number"):
            writer.from_indexed_dataset(SinDataset(10), chunksize=bad)


def test_shuffle_indices_draws_from_numpy_global_rng_and_keeps_the_callers_list(tmp_path):
    out = tmp_path / "shuffled.beton"
    indices = list(range(100))
    np.random.seed(3)
    DatasetWriter(out, {"index": IntField(), "value": FloatField()}, num_workers=2,
                  progress=False).from_indexed_dataset(SinDataset(100), indices,
                                                       shuffle_indices=True)
    expected = np.arange(100)
    np.random.seed(3)
    np.random.shuffle(expected)
    with Reader(out) as reader:
        assert reader.metadata["f0"].tolist() == expected.tolist()
    assert indices == list(range(100))


FFCV_SHUFFLE = r'''
import sys
import numpy as np
from ffcv.writer import DatasetWriter
from ffcv.fields import IntField, FloatField, BytesField

class SinDataset:
    def __len__(self):
        return 600
    def __getitem__(self, i):
        return (i, np.sin(i), np.array([i % 7, 255, 0, i % 256], dtype=np.int64))

np.random.seed(11)
DatasetWriter(sys.argv[1], {"index": IntField(), "value": FloatField(), "blob": BytesField()},
              num_workers=2).from_indexed_dataset(SinDataset(), chunksize=50,
                                                  shuffle_indices=True)
'''


def test_shuffled_write_and_int_bytes_match_ffcv(ffcv_python, tmp_path):
    """FFCV writes a shuffled file with BytesField values given as int64 arrays; fastdata,
    after the same np.random.seed, writes the same records in the same order."""
    ffcv_out = tmp_path / "ffcv.beton"
    run_ffcv(ffcv_python, FFCV_SHUFFLE, ffcv_out, cwd=tmp_path)

    class Same:
        def __len__(self):
            return 600

        def __getitem__(self, i):
            return (i, np.sin(i), np.array([i % 7, 255, 0, i % 256], dtype=np.int64))

    ours = tmp_path / "ours.beton"
    np.random.seed(11)
    DatasetWriter(ours, {"index": IntField(), "value": FloatField(), "blob": BytesField()},
                  num_workers=2, progress=False).from_indexed_dataset(
        Same(), chunksize=50, shuffle_indices=True)
    with Reader(ffcv_out) as theirs, Reader(ours) as mine:
        assert len(theirs) == len(mine) == 600
        assert [theirs[i] for i in range(600)] == [mine[i] for i in range(600)]
        assert theirs.metadata["f0"].tolist() != list(range(600))


def _write_shards(folder, n: int, per_shard: int) -> list[str]:
    """Tar shards as webdataset's ShardWriter writes them: per sample ``<key>.index`` (text)
    and ``<key>.value.json``."""
    paths = []
    for s in range(0, n, per_shard):
        path = os.path.join(folder, f"shard-{s // per_shard:04d}.tar")
        with tarfile.open(path, "w") as tar:
            for i in range(s, min(s + per_shard, n)):
                for ext, data in (("index", str(i).encode()),
                                  ("value.json", json.dumps({"sin": float(np.sin(i))}).encode())):
                    info = tarfile.TarInfo(f"sample_{i:06d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        paths.append(path)
    return paths


def wds_pipeline(dataset):
    """FFCV's tests/test_webdataset.py pipeline (decode, then a tuple in field order)."""
    return dataset.decode().to_tuple("index", "value.json").map(
        lambda s: (int(s[0]), s[1]["sin"]))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_from_webdataset_writes_every_shard_in_order(tmp_path, num_workers):
    pytest.importorskip("webdataset")
    shards = _write_shards(tmp_path, 107, 20)
    out = tmp_path / "wds.beton"
    report = DatasetWriter(out, {"index": IntField(), "value": FloatField()},
                           num_workers=num_workers, progress=False).from_webdataset(
        shards, wds_pipeline)
    assert report.num_written == 107
    with Reader(out) as reader:
        assert reader.metadata["f0"].tolist() == list(range(107))
        assert reader.metadata["f1"].tolist() == [float(np.sin(i)) for i in range(107)]


def test_from_webdataset_errors_name_the_shard(tmp_path):
    pytest.importorskip("webdataset")
    shards = _write_shards(tmp_path, 30, 10)
    with pytest.raises(WriteError, match=r"shard-0001\.tar sample 3: field 'index'"):
        DatasetWriter(tmp_path / "bad.beton", {"index": IntField(), "value": IntField()},
                      num_workers=2, progress=False).from_webdataset(
            shards, lambda ds: ds.decode().to_tuple("index", "value.json").map(
                lambda s: (int(s[0]) if int(s[0]) != 13 else "x", 1)))
    with pytest.raises(WriteError, match="no shards"):
        DatasetWriter(tmp_path / "none.beton", {"index": IntField()},
                      progress=False).from_webdataset([], wds_pipeline)


# -- 3. fields: FFCV's arguments and conversions ---------------------------------------------------
def test_field_arguments_in_ffcv_order_and_none_values(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    fields = {
        "raw": RGBImageField("raw", None, None, 90, None),
        "jpg": RGBImageField(write_mode="jpg", max_resolution=16, compress_probability=None),
        "smart": RGBImageField(write_mode="smart", smart_threshold=None),
        "array": NDArrayField(np.dtype("<i4"), (2, 3)),
        "tensor": TorchTensorField(torch.float32, (3,)),
    }
    out = tmp_path / "fields.beton"
    value = np.arange(6, dtype="<i4").reshape(2, 3)
    DatasetWriter(out, fields, num_workers=0, progress=False).from_indexed_dataset(
        [(image, image, image, value, torch.tensor([1.0, 2.0, 3.0]))])
    with Reader(out) as reader:
        raw, jpg, smart, array, tensor = reader[0]
        assert np.array_equal(raw, image) and np.array_equal(smart, image)
        assert jpg.shape == (10, 16, 3)        # 20 x 16/30 = 10.7, truncated as FFCV does
        assert np.array_equal(array, value)
        assert tensor.tolist() == [1.0, 2.0, 3.0]
        assert reader.fields["raw"].compress_probability is None
        assert reader.fields["raw"].proportion is None
    with pytest.raises(ValueError, match="'proportion' needs compress_probability"):
        RGBImageField(write_mode="proportion", compress_probability=None)
    with pytest.raises(ValueError, match=r"array of shape \(7,\) where the field expects "
                                         r"\(2, 3\)$"):
        NDArrayField(np.dtype("<i4"), (2, 3)).encode(np.arange(7), 0)
    with pytest.raises(ValueError, match=r"\(6,\) where .* FFCV would store it flattened"):
        NDArrayField(np.dtype("<i4"), (2, 3)).encode(np.arange(6), 0)


def test_bytes_field_casts_arrays_as_ffcv_and_refuses_lossy_ones():
    field = BytesField()
    assert field.encode(np.array([1, 2, 255], dtype=np.int64), 0).payload == b"\x01\x02\xff"
    assert field.encode(np.array([0.0, 7.0]), 0).payload == b"\x00\x07"
    assert field.encode(np.array([True, False]), 0).payload == b"\x01\x00"
    for bad, shown in ((np.array([1, 300]), "300"), (np.array([-1]), "-1"),
                       (np.array([1.5]), "1.5"), (np.array([np.nan]), "nan")):
        with pytest.raises(ValueError, match=f"element .* \\({shown}\\) of this"):
            field.encode(bad, 0)
    with pytest.raises(TypeError, match="needs a 1-D array"):
        field.encode(np.zeros((2, 2), dtype=np.uint8), 0)


def test_json_unpack_as_ffcv():
    docs = [{"a": 1}, {"b": [1, 2]}]
    rows = [json.dumps(d).encode() + b"\0" for d in docs]
    width = max(map(len, rows)) + 3
    batch = np.zeros((2, width), dtype=np.uint8)
    for k, row in enumerate(rows):
        batch[k, :len(row)] = np.frombuffer(row, dtype=np.uint8)
    assert JSONField.unpack(batch) == docs
    assert JSONField.unpack(torch.from_numpy(batch)) == docs
    assert JSONField.unpack(batch[1]) == docs[1]
    assert JSONField.unpack(docs) == docs                # fastdata's JSONDecoder output
    assert JSONField.unpack([batch[0], docs[1]]) == docs
    with pytest.raises(ValueError, match="row 0 has no NUL"):
        JSONField.unpack(np.full((1, 4), 65, dtype=np.uint8))


# -- 4. custom fields in FFCV's style --------------------------------------------------------------
class StringDecoder(NDArrayDecoder):
    """FFCV's tests/test_custom_field.py, imports changed."""


class StringField(NDArrayFieldClass):
    def __init__(self, max_len: int, pad_char="\0"):
        self.max_len = max_len
        self.pad_char = pad_char
        super().__init__(np.dtype("uint8"), (max_len,))

    def encode(self, destination, field, malloc):
        padded_field = (field + self.pad_char * self.max_len)[:self.max_len]
        field = np.frombuffer(padded_field.encode("ascii"), dtype="uint8")
        return super().encode(destination, field, malloc)


CAPTIONS = [f"caption {i} " + "x" * (i % 40) for i in range(100)]


def test_ffcv_style_string_field_writes_and_reads(tmp_path):
    from fastdata import Loader
    out = tmp_path / "strings.beton"
    DatasetWriter(str(out), {"label": StringField(100)}, num_workers=2,
                  progress=False).from_indexed_dataset([(c,) for c in CAPTIONS])
    with Reader(out, custom_fields={"label": StringField}) as reader:
        assert reader.field_descriptors[0]["type_id"] == 255
        assert type(reader.handlers["label"]) is NDArrayFieldClass     # as FFCV's from_binary
        got = [reader[i][0].tobytes().decode("ascii").rstrip("\0") for i in range(100)]
    assert got == CAPTIONS
    with pytest.raises(FormatError, match="custom type: pass its class in custom_fields"):
        Reader(out)
    loader = Loader(str(out), batch_size=10, num_workers=2, pipelines={"label": [StringDecoder()]},
                    custom_fields={"label": StringField})
    caps = [bytes(np.asarray(row)).decode("ascii").replace("\0", "")
            for (x,) in loader for row in x]
    assert sorted(caps) == sorted(CAPTIONS)
    with pytest.raises(ValueError):          # FFCV's test_no_custom_field
        Loader(str(out), batch_size=10, num_workers=2, pipelines={"label": [StringDecoder()]})


class PairField(Field):
    """A field written from scratch to FFCV's Field interface: a variable-length int32 list,
    metadata (ptr, count)."""

    @property
    def metadata_type(self):
        return np.dtype([("ptr", "<u8"), ("count", "<u4")])

    @staticmethod
    def from_binary(binary):
        return PairField()

    def to_binary(self):
        record = np.zeros(1, dtype=np.dtype([("", "<u1", 1024)]))[0]
        record[0][:4] = [80, 65, 73, 82]
        return record

    def encode(self, destination, field, malloc):
        values = np.asarray(field, dtype="<i4")
        if values.ndim != 1:
            raise ValueError("PairField needs a list of ints")
        ptr, buffer = malloc(values.nbytes)
        buffer[:] = values.view("<u1")
        destination["ptr"] = ptr
        destination["count"] = len(values)

    def get_decoder_class(self):
        return StringDecoder


def test_ffcv_style_field_from_scratch(tmp_path):
    out = tmp_path / "pairs.beton"
    lists = [list(range(i % 5)) for i in range(30)]
    samples = [(i, lst) if i != 17 else (i, [[1, 2]]) for i, lst in enumerate(lists)]
    report = DatasetWriter(out, {"index": IntField(), "pairs": PairField()}, num_workers=2,
                           on_error="skip", progress=False).from_indexed_dataset(samples)
    assert [f.index for f in report.failures] == [17]
    assert "PairField needs a list of ints" in report.failures[0].reason
    with Reader(out, custom_handlers={"pairs": PairField}) as reader:
        assert isinstance(reader.handlers["pairs"], PairField)
        assert reader.field_descriptors[1]["arguments"][:4].tolist() == [80, 65, 73, 82]
        column = reader.column("pairs")
        kept = [i for i in range(30) if i != 17]
        assert reader.metadata["f0"].tolist() == kept
        for row, i in enumerate(kept):
            ptr, count = int(column["ptr"][row]), int(column["count"][row])
            assert reader.data[ptr:ptr + 4 * count].view("<i4").tolist() == lists[i]
        # one region per written sample (an empty list too, as FFCV's malloc(0)); the sample
        # that failed left none behind
        assert sorted(reader.alloc_table["sample_id"].tolist()) == list(range(29))
        with pytest.raises(SampleError, match="PairField has no decode"):
            reader.read(0, "pairs")


def test_ffcv_style_sample_moves_whole_to_a_fresh_page(tmp_path):
    """A sample that runs past its page starts again on a fresh one, as in FFCV's writer: every
    sample's regions lie in one page."""
    page = 1 << 21
    big = [list(range(200_000)), list(range(200_000))]     # 800 kB each
    samples = [(i, big[0], big[1]) for i in range(8)]
    out = tmp_path / "pages.beton"
    DatasetWriter(out, {"index": IntField(), "a": PairField(), "b": PairField()},
                  page_size=page, num_workers=0, progress=False).from_indexed_dataset(samples)
    with Reader(out, custom_fields={"a": PairField, "b": PairField}) as reader:
        table = reader.alloc_table
        for sample in range(8):
            ptrs = table["ptr"][table["sample_id"] == sample]
            assert len(set((ptrs // page).tolist())) == 1
        assert (np.asarray(reader.data[int(reader.column("b")["ptr"][7]):][:8].view("<i4"))
                == [0, 1]).all()
    for too_big, message in (
            ((0, list(range(600_000)), []),
             "sample 0: tried to allocate 2400000 bytes but the page size is 2097152"),
            ((0, list(range(300_000)), list(range(300_000))),
             "sample 0: encoded sample does not fit in one page of 2097152 bytes")):
        with pytest.raises(WriteError, match=message):
            DatasetWriter(tmp_path / "big.beton", {"index": IntField(), "a": PairField(),
                                                   "b": PairField()}, page_size=page,
                          num_workers=0, progress=False).from_indexed_dataset([too_big])
        assert not (tmp_path / "big.beton").exists()


FFCV_STRINGS = r'''
import sys
import numpy as np
from ffcv.fields.ndarray import NDArrayField
from ffcv.writer import DatasetWriter
from ffcv.reader import Reader

class StringField(NDArrayField):
    def __init__(self, max_len, pad_char='\0'):
        self.max_len = max_len
        self.pad_char = pad_char
        super().__init__(np.dtype('uint8'), (max_len,))

    def encode(self, destination, field, malloc):
        padded_field = (field + self.pad_char * self.max_len)[:self.max_len]
        field = np.frombuffer(padded_field.encode('ascii'), dtype='uint8')
        return super().encode(destination, field, malloc)

CAPTIONS = [f"caption {i} " + "x" * (i % 40) for i in range(100)]

class DS:
    def __len__(self):
        return len(CAPTIONS)
    def __getitem__(self, i):
        return (CAPTIONS[i],)

mode, path = sys.argv[1], sys.argv[2]
if mode == "write":
    DatasetWriter(path, {"label": StringField(100)}, num_workers=2).from_indexed_dataset(DS())
else:
    reader = Reader(path, custom_handlers={"label": StringField})
    info = dict(num_samples=int(reader.num_samples), num_fields=int(reader.num_fields),
                page_size=int(reader.page_size), field_names=reader.field_names,
                handler=type(reader.handlers["label"]).__name__,
                type_id=int(reader.field_descriptors[0]["type_id"]),
                args=reader.field_descriptors[0]["arguments"].tolist())
    # the values, read as FFCV's NDArrayDecoder reads them: 100 bytes at each pointer
    data = np.fromfile(path, dtype=np.uint8)
    info["captions"] = [data[p:p + 100].tobytes().decode("ascii").rstrip("\0")
                        for p in reader.metadata["f0"].tolist()]
    with open(path + ".json", "w") as f:
        json.dump(info, f)
'''.replace("import sys\n", "import json, sys\n", 1)


def test_ffcv_and_fastdata_read_each_others_custom_fields(ffcv_python, tmp_path):
    ffcv_out = tmp_path / "ffcv_strings.beton"
    run_ffcv(ffcv_python, FFCV_STRINGS, "write", ffcv_out, cwd=tmp_path)
    with Reader(ffcv_out, custom_fields={"label": StringField}) as reader:
        assert [reader[i][0].tobytes().decode().rstrip("\0") for i in range(100)] == CAPTIONS

    ours = tmp_path / "our_strings.beton"
    DatasetWriter(str(ours), {"label": StringField(100)}, num_workers=2,
                  progress=False).from_indexed_dataset([(c,) for c in CAPTIONS])
    run_ffcv(ffcv_python, FFCV_STRINGS, "read", ours, cwd=tmp_path)
    with open(str(ours) + ".json") as f:
        info = json.load(f)
    assert info.pop("captions") == CAPTIONS
    with Reader(ours, custom_fields={"label": StringField}) as reader:
        assert info == dict(num_samples=reader.num_samples, num_fields=reader.num_fields,
                            page_size=reader.page_size, field_names=reader.field_names,
                            handler="NDArrayField", type_id=255,
                            args=reader.field_descriptors[0]["arguments"].tolist())


# -- 5. FFCV's Reader attributes -------------------------------------------------------------------
FFCV_READER = r'''
import sys
import numpy as np
from ffcv.reader import Reader
r = Reader(sys.argv[1])
np.savez(sys.argv[2], header=np.frombuffer(r.header.tobytes(), np.uint8),
         descriptors=np.frombuffer(r.field_descriptors.tobytes(), np.uint8),
         metadata=np.frombuffer(r.metadata.tobytes(), np.uint8),
         alloc=np.frombuffer(r.alloc_table.tobytes(), np.uint8),
         meta_descr=np.array(str(r.metadata_type.descr)),
         names=np.array(r.field_names), handlers=np.array([type(h).__name__ for h in
                                                            r.handlers.values()]),
         counts=np.array([int(r.num_samples), int(r.num_fields), int(r.page_size)]),
         file_name=np.array(r.file_name))
'''


def test_reader_attributes_equal_ffcvs(ffcv_python, tmp_path):
    out = tmp_path / "attrs.beton"
    image = np.full((6, 5, 3), 9, dtype=np.uint8)
    DatasetWriter(str(out), {"index": IntField(), "value": FloatField(), "img": RGBImageField(),
                             "doc": JSONField(), "arr": NDArrayField(np.dtype("<u2"), (3,))},
                  num_workers=0, progress=False).from_indexed_dataset(
        [(i, i / 2, image, {"i": i}, np.arange(3, dtype="<u2")) for i in range(5)])
    run_ffcv(ffcv_python, FFCV_READER, out, tmp_path / "ffcv.npz", cwd=tmp_path)
    theirs = np.load(tmp_path / "ffcv.npz")
    with Reader(str(out)) as r:
        assert theirs["header"].tobytes() == r.header.tobytes()
        assert theirs["descriptors"].tobytes() == r.field_descriptors.tobytes()
        assert theirs["metadata"].tobytes() == r.metadata.tobytes()
        assert theirs["alloc"].tobytes() == r.alloc_table.tobytes()
        assert str(theirs["meta_descr"]) == str(r.metadata_type.descr)
        assert theirs["names"].tolist() == r.field_names
        # FFCV's JSONField inherits BytesField's static from_binary, so FFCV's Reader gives a
        # BytesField for it; fastdata's gives a JSONField (a BytesField subclass).
        assert theirs["handlers"].tolist() == ["IntField", "FloatField", "RGBImageField",
                                               "BytesField", "NDArrayField"]
        assert [type(h).__name__ for h in r.handlers.values()] == [
            "IntField", "FloatField", "RGBImageField", "JSONField", "NDArrayField"]
        assert isinstance(r.handlers["doc"], BytesField)
        assert theirs["counts"].tolist() == [r.num_samples, r.num_fields, r.page_size]
        assert str(theirs["file_name"]) == r.file_name


def test_reader_attributes_without_ffcv(tmp_path):
    out = tmp_path / "attrs.beton"
    DatasetWriter(str(out), {"index": IntField(), "value": FloatField()}, num_workers=0,
                  progress=False).from_indexed_dataset(SinDataset(6))
    with Reader(str(out)) as r:
        assert r.handlers is r.fields and list(r.handlers) == ["index", "value"]
        assert isinstance(r.handlers["index"], IntField)
        assert (r.num_samples, r.num_fields, r.file_name) == (6, 2, str(out))
        assert int(r.header["num_samples"]) == 6 and int(r.header["num_fields"]) == 2
        assert r.metadata_type == r.metadata_dtype and r.metadata_type.names == ("f0", "f1")
        assert r.field_descriptors["type_id"].tolist() == [1, 0]
        assert (np.sin(r.metadata["f0"]) == r.metadata["f1"]).all()
    with pytest.raises(TypeError, match="not both"):
        Reader(str(out), custom_fields={"a": IntField}, custom_handlers={"a": IntField})
    with pytest.raises(TypeError, match="must be a subclass of fastdata.fields.Field"):
        Reader(str(out), custom_fields={"index": int})


def test_builtin_fields_answer_ffcvs_interface():
    from fastdata.ops import IntDecoder, NDArrayDecoder as Decoder, SimpleRGBImageDecoder
    array = NDArrayField(np.dtype("<u2"), (3, 2))
    assert array.metadata_type == np.dtype("<u8")
    binary = array.to_binary()
    assert binary.dtype == np.dtype([("", "<u1", 1024)]) and binary[0].shape == (1024,)
    back = NDArrayField.from_binary(binary[0])
    assert (type(back), back.dtype, back.shape) == (NDArrayField, np.dtype("<u2"), (3, 2))
    assert type(StringField.from_binary(StringField(8).to_binary()[0])) is NDArrayFieldClass
    assert IntField().get_decoder_class() is IntDecoder
    assert array.get_decoder_class() is Decoder
    assert RGBImageField().get_decoder_class() is SimpleRGBImageDecoder
    assert RGBImageField().metadata_type.names == ("mode", "width", "height", "data_ptr")

    class NoMetadata(Field):
        def encode(self, destination, field, malloc):
            pass
    with pytest.raises(TypeError, match="defines neither metadata_dtype"):
        NoMetadata().metadata_type
    with pytest.raises(TypeError, match="NoMetadata derives from no fastdata field type"):
        NoMetadata.from_binary(np.zeros(1024, np.uint8))
