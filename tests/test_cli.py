"""The command line: demo end to end, inspect's report and dump, one-line errors."""
import os
import re

import numpy as np
import pytest
from PIL import Image

from fastdata import Reader
from fastdata.cli import main
from fastdata.demo import make_imagenet_like


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("inet")
    return make_imagenet_like(str(root), classes=3, per_class=6, val_per_class=2)


def test_demo_runs_end_to_end(tmp_path, capsys):
    assert main(["demo", "--dir", str(tmp_path), "--classes", "2", "--per-class", "3"]) == 0
    out = capsys.readouterr().out
    assert "wrote 6 samples" in out and "images/s" in out
    assert "read back and decoded all 6 samples" in out
    with Reader(tmp_path / "train.beton") as reader:
        assert len(reader) == 6
        assert sorted(reader.read(i, "label") for i in range(6)) == [0, 0, 0, 1, 1, 1]


def _number(text: str) -> int:
    """The first whole number in ``text`` (thousands separators allowed)."""
    return int(re.search(r"\d[\d,]*", text).group(0).replace(",", ""))


def test_inspect_reports_fields_sizes_and_histograms(small_folder, tmp_path, capsys):
    out_file = str(tmp_path / "t.beton")
    assert main(["write", "imagenet", "--data-dir", small_folder, "--out", out_file,
                 "--write-mode", "proportion", "--max-resolution", "300", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["inspect", out_file]) == 0
    report = capsys.readouterr().out
    # "key: value" lines, however the columns are spaced
    facts = {m.group(1): m.group(2)
             for m in re.finditer(r"^\s*(\w[\w ]*?):\s+(.*)$", report, re.M)}
    with Reader(out_file) as reader:
        images = reader.metadata["f0"]
        stored = [(int(w), int(h)) for w, h in zip(images["width"], images["height"])]
        original = [reader.original_size(i, "image") for i in range(len(reader))]
        assert _number(facts["samples"]) == len(reader) == 18
        assert _number(facts["page size"]) == reader.page_size
        assert _number(facts["metadata"]) == reader.metadata_dtype.itemsize
    assert _number(facts["size"]) == os.path.getsize(out_file)
    assert re.search(r"'image' type 2 RGBImageField\(write_mode='proportion', "
                     r"max_resolution=300\b", report)
    assert re.search(r"'label' type 1 IntField\(\): in metadata", report)
    jpg, raw = (int(re.search(rf"\b{mode}\s+(\d+)", facts["mode"]).group(1))
                for mode in ("jpg", "raw"))
    assert (jpg, raw) == (int((images["mode"] == 0).sum()), int((images["mode"] == 1).sum()))
    assert jpg > 0 and raw > 0
    histogram = {(int(lo), int(hi)): int(count) for lo, hi, count in
                 re.findall(r"^\s+(\d+)-(\d+)\s+(\d+)\s", report, re.M)}
    longest = [max(size) for size in stored]
    assert histogram and sum(histogram.values()) == len(longest)
    for (lo, hi), count in histogram.items():
        assert count == sum(lo <= side <= hi for side in longest), (lo, hi)
    downscaled = sum(s != o for s, o in zip(stored, original))
    assert downscaled > 0
    assert int(re.search(r"(\d+) images were downscaled", report).group(1)) == downscaled


def test_inspect_dump_writes_decoded_images(small_folder, tmp_path, capsys):
    out_file = str(tmp_path / "t.beton")
    assert main(["write", "imagenet", "--data-dir", small_folder, "--out", out_file,
                 "--quiet"]) == 0
    dump_dir = tmp_path / "dump"
    assert main(["inspect", out_file, "--dump", "4", "--out", str(dump_dir)]) == 0
    files = sorted(os.listdir(dump_dir))
    assert files == [f"00000{i}_image.png" for i in range(4)]
    with Reader(out_file) as reader:
        for i, name in enumerate(files):
            assert np.array_equal(np.asarray(Image.open(dump_dir / name)), reader.read(i, "image"))


def test_user_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.beton"
    bad.write_bytes(b"\x02\x00" + b"\xff" * 100)
    assert main(["inspect", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastdata: error:") and "bad.beton" in err[0]

    assert main(["inspect", str(tmp_path / "missing.beton")]) == 1
    assert "missing.beton" in capsys.readouterr().err

    assert main(["inspect", str(bad), "--dump", "3"]) == 1
    assert "--dump needs --out" in capsys.readouterr().err

    assert main(["write", "imagenet", "--data-dir", str(tmp_path / "nope"), "--out",
                 str(tmp_path / "o.beton")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0]
    assert not (tmp_path / "o.beton").exists()

    with pytest.raises(SystemExit) as exit_info:
        main(["write", "imagenet", "--data-dir", str(tmp_path), "--out", "x",
              "--write-mode", "webp"])
    assert exit_info.value.code == 2


def test_write_folder_stores_relative_paths(small_folder, tmp_path, capsys):
    out_file = str(tmp_path / "f.beton")
    assert main(["write", "folder", "--data-dir", os.path.join(small_folder, "val"),
                 "--out", out_file, "--quiet"]) == 0
    with Reader(out_file) as reader:
        paths = [reader.read(i, "path") for i in range(len(reader))]
    assert paths == sorted(paths) and len(paths) == 6
    assert paths[0] == os.path.join("n00000000", "n00000000_0.JPEG")
