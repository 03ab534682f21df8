"""``fastdata merge``: shards joined into one file by copying records.

The merge of shards holds every value of a single file written from the same records (every field
type, edge values); FFCV's own Reader, memory manager, JPEG decoder and Loader read the merged
file exactly as they read that single file; files FFCV wrote merge too; bad shard sets and
outputs are refused naming the file, leaving nothing at the output path.
"""
import json
import shutil

import numpy as np
import pytest

from fastdata import FormatError, Reader
from fastdata.cli import main
from fastdata.merge import merge_shards
from fastdata.writers import write_indexed_dataset

from test_ffcv_compat import READ_A, fastdata_samples_a, ffcv_python, run_ffcv  # noqa: F401
from test_ffcv_fixtures import _fixture

PAGE = 1 << 21


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(a, float):
        return np.float64(a).tobytes() == np.float64(b).tobytes()
    return type(a) is type(b) and a == b


def _write_single_and_shards(tmp_path, count=2):
    fields, samples = fastdata_samples_a()
    single = tmp_path / "single.beton"
    write_indexed_dataset(samples, str(single), fields, page_size=PAGE, progress=False)
    shards = [tmp_path / f"a-{k}-of-{count}.beton" for k in range(count)]
    for k, path in enumerate(shards):
        fields, _ = fastdata_samples_a()
        write_indexed_dataset(samples, str(path), fields, page_size=PAGE, progress=False,
                              shard=(k, count))
    return single, shards


def test_merged_file_holds_every_value_of_the_single_file(tmp_path):
    single, shards = _write_single_and_shards(tmp_path)
    # given in reverse: -K-of-N names are put in K order
    report = merge_shards([str(p) for p in shards[::-1]], tmp_path / "merged.beton")
    assert (report.num_shards, report.num_samples) == (2, len(Reader(single)))
    with Reader(single) as one, Reader(tmp_path / "merged.beton") as merged:
        assert merged.field_names == one.field_names and len(merged) == len(one)
        for i in range(len(one)):
            for name in one.field_names:
                assert _same(merged.read(i, name), one.read(i, name)), (i, name)
            for name in ("raw", "jpg", "prop"):
                assert merged.original_size(i, name) == one.original_size(i, name)
                assert bytes(merged.payload(i, name)) == bytes(one.payload(i, name))
        # the side tables were rejoined: one per image field, in its arguments
        assert all(merged.fields[n].side_table_location[1] == len(one)
                   for n in ("raw", "jpg", "prop"))


def test_files_ffcv_wrote_merge(tmp_path):
    fixture, _ = _fixture("ffcv_all_fields.beton")
    parts = [tmp_path / f"f-{k}-of-2.beton" for k in range(2)]
    for part in parts:
        shutil.copy(fixture, part)
    assert main(["merge", str(tmp_path / "f-*-of-2.beton"), "--out",
                 str(tmp_path / "f.beton")]) == 0
    with Reader(fixture) as one, Reader(tmp_path / "f.beton") as merged:
        n = len(one)
        assert len(merged) == 2 * n
        for i in range(2 * n):
            for name in one.field_names:
                assert _same(merged.read(i, name), one.read(i % n, name)), (i, name)


def test_bad_merges_name_the_file_and_write_nothing(tmp_path, capsys):
    single, shards = _write_single_and_shards(tmp_path, count=3)
    out = tmp_path / "out.beton"
    with pytest.raises(ValueError, match=r"a-K-of-3\.beton: shard 1 of 3 is missing"):
        merge_shards([str(shards[0]), str(shards[2])], out)
    with pytest.raises(ValueError, match=r"the output is one of the shards"):
        merge_shards([str(p) for p in shards], shards[1])
    other = tmp_path / "other.beton"
    write_indexed_dataset([(1,), (2,)], str(other),
                          {"label": fastdata_samples_a()[0]["label"]}, page_size=PAGE,
                          progress=False)
    with pytest.raises(FormatError, match=r"other\.beton: fields \['label'\] differ"):
        merge_shards([str(single), str(other)], out)
    assert not out.exists()
    assert list(tmp_path.glob("out.beton*")) == []

    assert main(["merge", str(shards[0]), str(shards[2]), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastdata: error:") and "a-K-of-3" in err[0]
    assert main(["merge", *map(str, shards), "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"merged 3 shards (7 samples) into {out}")


def _ffcv_dump(exe, path, out_dir):
    out_dir.mkdir()
    run_ffcv(exe, READ_A, path, out_dir, cwd=out_dir)
    info = json.loads((out_dir / "info.json").read_text(encoding="utf-8"))
    with np.load(out_dir / "arrays.npz") as npz:
        return info, dict(npz)


def test_ffcv_reads_the_merged_file_as_the_single_file(ffcv_python, tmp_path):  # noqa: F811
    single, shards = _write_single_and_shards(tmp_path)
    merged = tmp_path / "merged.beton"
    merge_shards([str(p) for p in shards], merged)
    info_one, arrays_one = _ffcv_dump(ffcv_python, single, tmp_path / "one")
    info_merged, arrays_merged = _ffcv_dump(ffcv_python, merged, tmp_path / "merged")
    # FFCV's Reader + OSCacheManager + imdecode of every value, and its Loader's batches
    assert info_merged["num_samples"] == info_one["num_samples"] == 7
    assert info_merged["loader_batches"] == 7
    # the image fields' arguments differ only in where the side table is (count of non-zero
    # argument bytes); everything FFCV read is the same
    for info in (info_one, info_merged):
        for name in ("raw", "jpg", "prop"):
            assert info["fields"][name].pop("args_nonzero") > 0
    assert info_merged == info_one
    assert sorted(arrays_merged) == sorted(arrays_one)
    for key, value in arrays_one.items():
        name, kind, i = key.split("__") if key.count("__") == 2 else (key, "", "")
        if kind == "loader" and name in ("blob", "meta"):
            # FFCV's BytesDecoder fills a batch buffer: bytes past the value's size are stale
            size = info_one["fields"][name]["size"][int(i)]
            value, other = value[:size], arrays_merged[key][:size]
        else:
            other = arrays_merged[key]
        assert _same(other, value), key


def test_merge_of_metadata_only_shards_is_the_single_write_byte_for_byte(tmp_path):
    from fastdata import FloatField, IntField
    samples = [(i - 5, i * 0.25) for i in range(11)]
    fields = lambda: {"a": IntField(), "b": FloatField()}  # noqa: E731
    write_indexed_dataset(samples, str(tmp_path / "one.beton"), fields(), page_size=PAGE,
                          progress=False)
    for k in range(3):
        write_indexed_dataset(samples, str(tmp_path / f"m-{k}-of-3.beton"), fields(),
                              page_size=PAGE, progress=False, shard=(k, 3))
    merge_shards(str(tmp_path / "m-*-of-3.beton"), tmp_path / "merged.beton")
    assert (tmp_path / "merged.beton").read_bytes() == (tmp_path / "one.beton").read_bytes()
