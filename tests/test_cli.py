"""The command line: demo end to end, inspect's report and dump, one-line errors."""
import os

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


def test_inspect_reports_fields_sizes_and_histograms(small_folder, tmp_path, capsys):
    out_file = str(tmp_path / "t.beton")
    assert main(["write", "imagenet", "--data-dir", small_folder, "--out", out_file,
                 "--write-mode", "proportion", "--max-resolution", "300", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["inspect", out_file]) == 0
    report = capsys.readouterr().out
    assert "samples:     18" in report
    assert "page size:   8,388,608 bytes" in report
    assert f"size:        {os.path.getsize(out_file):,} bytes" in report
    assert "'image' type 2 RGBImageField(write_mode='proportion', max_resolution=300" in report
    assert "'label' type 1 IntField(): in metadata" in report
    assert "mode: jpg" in report and "raw" in report
    assert "longest side histogram" in report and "256-383" in report
    assert "images were downscaled" in report


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
