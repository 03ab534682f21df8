"""The writer on the awkward inputs that real image folders hold.

Every test builds its own ImageNet-style folder under tmp_path, writes it with
``fastdata.writers.write_imagenet`` (or the ``fastdata`` command line) and checks what was
stored, what was reported and what was left on disk.
"""
from __future__ import annotations

import glob
import io
import os
import re
import signal
import struct
import subprocess
import sys
import textwrap
import time

import cv2
import numpy as np
import pytest
import simplejpeg
from PIL import Image, ImageOps

from fastdata import DatasetWriter, IntField, Reader, RGBImageField, WriteError
from fastdata.pixels import jpeg as fdjpeg
from fastdata.cli import main as cli_main
from fastdata.writers import ImageNetFolder, write_imagenet

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- making data --------------------------------------------------------------------------------
def photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A photo-like H x W x 3 uint8 image: smooth colour waves plus mild noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = rng.uniform(0, 6.28, 3)
    chans = [128 + 90 * np.sin(x / (5 + 3 * k) + y / (7 + 2 * k) + phase[k]) for k in range(3)]
    img = np.stack(chans, axis=2) + rng.normal(0, 6, (height, width, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def encode_pil(img, fmt: str = "JPEG", **kw) -> bytes:
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def pil_rgb(data: bytes) -> np.ndarray:
    """What torchvision's loader sees: PIL's convert('RGB') of the file."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def assert_reencoded_close(img: np.ndarray, expected: np.ndarray) -> None:
    """``img`` is ``expected`` after one JPEG re-encode (quality 90, 4:2:0): no worse than that."""
    assert img.shape == expected.shape
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(expected[:, :, ::-1]),
                           [cv2.IMWRITE_JPEG_QUALITY, 90])
    reference = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]
    bound = np.abs(reference.astype(int) - expected.astype(int)).mean()
    assert np.abs(img.astype(int) - expected.astype(int)).mean() <= 1.25 * bound + 1


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of every marker segment before the first SOS (inclusive)."""
    assert data[:2] == b"\xff\xd8"
    pos, segs = 2, []
    while True:
        assert data[pos] == 0xFF
        marker = data[pos + 1]
        (length,) = struct.unpack_from(">H", data, pos + 2)
        segs.append((marker, pos, pos + 2 + length))
        if marker == 0xDA:
            return segs
        pos += 2 + length


def without_segments(data: bytes, markers: set[int]) -> bytes:
    out, pos = [], 0
    for marker, start, end in jpeg_segments(data):
        if marker in markers:
            out.append(data[pos:start])
            pos = end
    out.append(data[pos:])
    return b"".join(out)


def sof_marker(data: bytes) -> int:
    return next(m for m, _, _ in jpeg_segments(data) if 0xC0 <= m <= 0xCF and m not in
                (0xC4, 0xC8, 0xCC))


def exif_bytes(orientation: int = 1) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "fastdata test camera"    # Make: some more EXIF payload
    return exif.tobytes()


def corrupt_jpeg(seed: int) -> bytes:
    """A valid header up to and including SOS, then random garbage, then EOI."""
    src = encode_pil(photo(64, 48, seed=seed), quality=90)
    sos_end = jpeg_segments(src)[-1][2]
    garbage = np.random.default_rng(1000 + seed).integers(0, 256, len(src) - sos_end - 2,
                                                          dtype=np.uint8).tobytes()
    return src[:sos_end] + garbage + b"\xff\xd9"


def make_tree(root, files: dict[str, bytes]) -> dict[str, str]:
    """Create ``root/<relpath>`` for each entry; returns relpath -> absolute path."""
    paths = {}
    for rel, data in files.items():
        path = os.path.join(str(root), *rel.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        paths[rel] = path
    return paths


def write(data_dir, out, field=None, on_error="fail", split="train", **kw):
    return write_imagenet(str(data_dir), str(out), split=split, image_field=field,
                          on_error=on_error, progress=False, num_workers=2, **kw)


def read_all(path) -> list[dict]:
    """Every record of a written file: image, label, stored payload bytes, original size."""
    with Reader(path) as reader:
        out = []
        for i in range(len(reader)):
            img, label = reader.read(i, "image"), reader.read(i, "label")
            out.append(dict(image=img, label=label,
                            payload=bytes(reader.payload(i, "image")),
                            original_size=reader.original_size(i, "image")))
        return out


def write_one(tmp_path, data: bytes, name: str = "img.JPEG", field=None) -> dict:
    """Write a folder holding one image; its single record."""
    make_tree(tmp_path / "data" / "train", {f"cls/{name}": data})
    out = tmp_path / "out.beton"
    report = write(tmp_path / "data", out, field=field)
    assert report.num_written == 1 and report.num_failed == 0 and report.failures == []
    (record,) = read_all(out)
    assert record["label"] == 0
    return record


# -- colour models and formats ------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["raw", "jpg"])
def test_cmyk_jpeg_is_stored_as_rgb(tmp_path, mode):
    src = encode_pil(Image.fromarray(photo(80, 60, seed=1)).convert("CMYK"), quality=95)
    with Image.open(io.BytesIO(src)) as im:
        assert im.mode == "CMYK"
    expected = pil_rgb(src)
    rec = write_one(tmp_path, src, field=RGBImageField(write_mode=mode))
    assert rec["image"].shape == (60, 80, 3) and rec["image"].dtype == np.uint8
    diff = np.abs(rec["image"].astype(int) - expected.astype(int))
    if mode == "raw":
        assert diff.max() <= 2
    else:
        assert_reencoded_close(rec["image"], expected)
        assert rec["payload"] != src          # a 4-component JPEG cannot be kept as is
        assert fdjpeg.parse_header(rec["payload"]).components == 3


@pytest.mark.parametrize("mode", ["raw", "jpg"])
def test_grayscale_jpeg_has_three_equal_channels(tmp_path, mode):
    gray = photo(70, 50, seed=2)[:, :, 0]
    src = encode_pil(gray, quality=92)
    rec = write_one(tmp_path, src, field=RGBImageField(write_mode=mode))
    img = rec["image"]
    assert img.shape == (50, 70, 3)
    assert np.array_equal(img[:, :, 0], img[:, :, 1])
    assert np.array_equal(img[:, :, 0], img[:, :, 2])
    expected = pil_rgb(src)[:, :, 0]
    if mode == "raw":
        assert np.array_equal(img[:, :, 0], expected)
    else:
        assert_reencoded_close(img, np.repeat(expected[:, :, None], 3, axis=2))


def test_png_named_jpeg_is_decoded_by_content(tmp_path):
    pixels = photo(33, 21, seed=3)
    rec = write_one(tmp_path, encode_pil(pixels, "PNG"), name="really_a_png.JPEG")
    assert np.array_equal(rec["image"], pixels)


def test_rgba_png_drops_alpha(tmp_path):
    rgba = np.dstack([photo(40, 30, seed=4),
                      np.random.default_rng(4).integers(0, 256, (30, 40), dtype=np.uint8)])
    rgba[0, 0, 3] = 0       # fully transparent pixels keep their colour, as convert('RGB')
    src = encode_pil(Image.fromarray(rgba, "RGBA"), "PNG")
    rec = write_one(tmp_path, src, name="rgba.png")
    assert np.array_equal(rec["image"], rgba[:, :, :3])
    assert np.array_equal(rec["image"], pil_rgb(src))


def test_16bit_grayscale_png_keeps_the_high_byte(tmp_path):
    values = np.linspace(0, 65535, 48 * 32).round().astype(np.uint16).reshape(32, 48)
    values[0, :6] = [0, 255, 256, 511, 65280, 65535]
    im = Image.fromarray(values)
    assert im.mode == "I;16"
    src = encode_pil(im, "PNG")
    with Image.open(io.BytesIO(src)) as check:       # it really is a 16-bit file
        assert check.mode in ("I;16", "I") and np.asarray(check).max() == 65535
    rec = write_one(tmp_path, src, name="depth.png")
    expected = (values >> 8).astype(np.uint8)
    assert rec["image"].shape == (32, 48, 3)
    for c in range(3):
        assert np.array_equal(rec["image"][:, :, c], expected)
    assert list(rec["image"][0, :6, 0]) == [0, 0, 1, 1, 255, 255]


@pytest.mark.parametrize("mode", ["raw", "jpg"])
def test_progressive_jpeg(tmp_path, mode):
    src = encode_pil(photo(96, 64, seed=5), quality=90, progressive=True)
    assert sof_marker(src) == 0xC2
    expected = pil_rgb(src)
    rec = write_one(tmp_path, src, field=RGBImageField(write_mode=mode))
    if mode == "raw":
        assert np.array_equal(rec["image"], expected)
    else:
        # Not kept as is: readers expect baseline JPEG, so it is re-encoded.
        assert rec["payload"] != src
        assert rec["payload"] != without_segments(src, {0xE1, 0xFE})
        assert sof_marker(rec["payload"]) in (0xC0, 0xC1)
        assert_reencoded_close(rec["image"], expected)


# -- EXIF orientation ---------------------------------------------------------------------------
def rotated_photo() -> tuple[bytes, np.ndarray]:
    pixels = photo(64, 40, seed=6)        # coded 64 wide, 40 high; orientation 6: shown 40 x 64
    src = encode_pil(pixels, quality=90, exif=exif_bytes(6))
    assert fdjpeg.parse_header(src).exif_orientation == 6
    return src, pixels


@pytest.mark.parametrize("mode", ["raw", "jpg"])
def test_exif_orientation_is_not_applied_by_default(tmp_path, mode):
    src, _ = rotated_photo()
    rec = write_one(tmp_path, src, field=RGBImageField(write_mode=mode))
    assert rec["image"].shape == (40, 64, 3)       # as coded, as torchvision's loader
    assert np.array_equal(rec["image"], pil_rgb(src))


@pytest.mark.parametrize("mode", ["raw", "jpg"])
def test_exif_transpose_rotates(tmp_path, mode):
    src, _ = rotated_photo()
    with Image.open(io.BytesIO(src)) as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    assert expected.shape == (64, 40, 3)
    rec = write_one(tmp_path, src, field=RGBImageField(write_mode=mode, exif_transpose=True))
    assert rec["image"].shape == (64, 40, 3)       # width and height swapped
    if mode == "raw":
        assert np.array_equal(rec["image"], expected)
    else:
        assert_reencoded_close(rec["image"], expected)


# -- keeping source JPEGs -----------------------------------------------------------------------
def annotated_jpeg() -> bytes:
    src = encode_pil(photo(120, 80, seed=7), quality=88, exif=exif_bytes(1),
                     comment=b"shot by fastdata's tests")
    markers = [m for m, _, _ in jpeg_segments(src)]
    assert 0xE1 in markers and 0xFE in markers and 0xE0 in markers
    return src


@pytest.mark.parametrize("max_resolution", [None, 120, 1000])
def test_baseline_jpeg_is_kept_without_metadata(tmp_path, max_resolution):
    src = annotated_jpeg()
    rec = write_one(tmp_path, src, field=RGBImageField(write_mode="jpg",
                                                       max_resolution=max_resolution))
    expected = without_segments(src, {0xE1, 0xFE})
    assert rec["payload"] == expected
    assert b"shot by fastdata" not in rec["payload"] and b"Exif" not in rec["payload"]
    assert np.array_equal(rec["image"], simplejpeg.decode_jpeg(src, colorspace="RGB"))
    assert np.array_equal(rec["image"], pil_rgb(src))


def test_keep_source_jpeg_false_reencodes(tmp_path):
    src = annotated_jpeg()
    rec = write_one(tmp_path, src, field=RGBImageField(write_mode="jpg", keep_source_jpeg=False))
    assert rec["payload"] != without_segments(src, {0xE1, 0xFE})
    assert rec["payload"] != src
    assert b"shot by fastdata" not in rec["payload"]
    assert rec["payload"][:2] == b"\xff\xd8"
    expected = pil_rgb(src)
    assert rec["image"].shape == expected.shape
    assert np.abs(rec["image"].astype(int) - expected).mean() < 4


# -- huge and tiny ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def huge_jpeg() -> bytes:
    """An 8000 x 6000 smooth gradient: encodes to under a megabyte, quickly."""
    corners = np.array([[[0, 30, 200], [255, 60, 0]],
                        [[20, 255, 40], [240, 200, 255]]], dtype=np.uint8)
    img = cv2.resize(corners, (8000, 6000), interpolation=cv2.INTER_LINEAR)
    return encode_pil(img, quality=85)


def test_huge_image_is_downscaled_with_inter_area(tmp_path, huge_jpeg):
    rec = write_one(tmp_path, huge_jpeg, name="huge.JPEG",
                    field=RGBImageField(write_mode="raw", max_resolution=500))
    assert rec["image"].shape == (375, 500, 3)
    assert rec["original_size"] == (8000, 6000)
    decoded = simplejpeg.decode_jpeg(huge_jpeg, colorspace="RGB")
    assert decoded.shape == (6000, 8000, 3)
    expected = cv2.resize(decoded, (500, 375), interpolation=cv2.INTER_AREA)
    assert np.array_equal(rec["image"], expected)


def huge_folder(tmp_path, huge_jpeg) -> tuple[str, str]:
    paths = make_tree(tmp_path / "data" / "train", {
        "cls/big.JPEG": huge_jpeg,
        "cls/small.JPEG": encode_pil(photo(32, 24, seed=8), quality=90),
    })
    return paths["cls/big.JPEG"], paths["cls/small.JPEG"]


def test_huge_raw_image_is_skipped_as_larger_than_a_page(tmp_path, huge_jpeg):
    big, small = huge_folder(tmp_path, huge_jpeg)
    out = tmp_path / "out.beton"
    report = write(tmp_path / "data", out, field=RGBImageField(write_mode="raw"), on_error="skip")
    assert report.num_written == 1 and report.num_failed == 1
    (failure,) = report.failures
    assert failure.source == big and failure.index == 0
    assert re.search(r"larger than the page size", failure.reason)
    assert report.error_log == str(out) + ".errors.tsv"
    rows = read_error_log(report.error_log)
    assert [r[1] for r in rows] == [big]
    (rec,) = read_all(out)
    assert rec["image"].shape == (24, 32, 3) and rec["label"] == 0


def test_huge_raw_image_fails_the_write(tmp_path, huge_jpeg):
    big, _ = huge_folder(tmp_path, huge_jpeg)
    out = tmp_path / "out" / "out.beton"
    out.parent.mkdir()
    with pytest.raises(WriteError) as info:
        write(tmp_path / "data", out, field=RGBImageField(write_mode="raw"), on_error="fail")
    assert big in str(info.value)
    assert "larger than the page size" in str(info.value)
    assert os.listdir(out.parent) == []


def test_tiny_images(tmp_path):
    one = np.array([[[10, 200, 30]]], dtype=np.uint8)
    strip = photo(3, 900, seed=9)          # 3 wide, 900 high
    wide = photo(900, 3, seed=10)
    paths = make_tree(tmp_path / "data" / "train", {
        "a/one.png": encode_pil(one, "PNG"),
        "a/one_jpeg.JPEG": encode_pil(one, quality=95),
        "a/strip.png": encode_pil(strip, "PNG"),
        "a/wide.png": encode_pil(wide, "PNG"),
    })
    names = sorted(paths)       # record order within the one class
    assert names == ["a/one.png", "a/one_jpeg.JPEG", "a/strip.png", "a/wide.png"]

    out = tmp_path / "capped.beton"
    report = write(tmp_path / "data", out, field=RGBImageField(max_resolution=500))
    assert report.num_written == 4 and report.failures == []
    recs = dict(zip(names, read_all(out)))
    assert np.array_equal(recs["a/one.png"]["image"], one)
    assert recs["a/one_jpeg.JPEG"]["image"].shape == (1, 1, 3)
    assert np.abs(recs["a/one_jpeg.JPEG"]["image"].astype(int) - one).max() <= 3
    assert recs["a/strip.png"]["image"].shape == (500, 1, 3)      # 1 wide, 500 high, never 0
    assert recs["a/strip.png"]["original_size"] == (3, 900)
    assert np.array_equal(recs["a/strip.png"]["image"],
                          cv2.resize(strip, (1, 500), interpolation=cv2.INTER_AREA))
    assert recs["a/wide.png"]["image"].shape == (1, 500, 3)
    assert np.array_equal(recs["a/wide.png"]["image"],
                          cv2.resize(wide, (500, 1), interpolation=cv2.INTER_AREA))

    out = tmp_path / "full.beton"
    write(tmp_path / "data", out, field=RGBImageField(write_mode="jpg"))
    recs = dict(zip(names, read_all(out)))
    assert recs["a/one.png"]["image"].shape == (1, 1, 3)
    assert recs["a/strip.png"]["image"].shape == (900, 3, 3)
    assert recs["a/wide.png"]["image"].shape == (3, 900, 3)
    # a 1 x 1 baseline JPEG is kept as is
    with open(paths["a/one_jpeg.JPEG"], "rb") as f:
        assert recs["a/one_jpeg.JPEG"]["payload"] == without_segments(f.read(), {0xE1, 0xFE})


# -- unreadable files ---------------------------------------------------------------------------
def read_error_log(path) -> list[tuple[int, str, str]]:
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert lines[0] == "source_index\tsource\treason"
    rows = []
    for line in lines[1:]:
        index, source, reason = line.split("\t")
        rows.append((int(index), source, reason))
    return rows


def first_60_percent(data: bytes) -> bytes:
    return data[:int(len(data) * 0.6)]


GOOD = {name: photo(40, 30, seed=20 + k) for k, name in enumerate(["g0", "g1", "g2", "g3"])}


def bad_folder(tmp_path) -> tuple[list[tuple[str, int, str]], dict[str, str]]:
    """A folder mixing good JPEGs with unreadable files.

    Returns the record order [(relpath, label, kind)] and relpath -> absolute path."""
    valid = encode_pil(photo(64, 48, seed=11), quality=90)
    files = {
        "a/g0.JPEG": encode_pil(GOOD["g0"], quality=90),
        "a/truncated.JPEG": first_60_percent(valid),
        "b/empty.JPEG": b"",
        "b/g1.JPEG": encode_pil(GOOD["g1"], quality=90),
        "b/notes.JPEG": b"this is a text file, not an image\n" * 20,
        "c/corrupt.JPEG": corrupt_jpeg(0),
        "c/g2.JPEG": encode_pil(GOOD["g2"], quality=90),
        "d/g3.png": encode_pil(GOOD["g3"], "PNG"),
    }
    kinds = {"a/truncated.JPEG": "truncated", "b/empty.JPEG": "empty",
             "b/notes.JPEG": "text", "c/corrupt.JPEG": "corrupt"}
    paths = make_tree(tmp_path / "data" / "train", files)
    labels = {"a": 0, "b": 1, "c": 2, "d": 3}
    order = [(rel, labels[rel.split("/")[0]], kinds.get(rel, "good")) for rel in sorted(files)]
    return order, paths


REASON = {
    "truncated": r"truncat",
    "empty": r"empty",
    "text": r"not an image|unrecogni[sz]ed|cannot identify",
    "corrupt": r".",
}


def test_bad_files_are_skipped_and_logged(tmp_path):
    order, paths = bad_folder(tmp_path)
    out = tmp_path / "out.beton"
    report = write(tmp_path / "data", out, field=RGBImageField(write_mode="jpg"), on_error="skip")
    bad = [(i, paths[rel], kind) for i, (rel, _, kind) in enumerate(order) if kind != "good"]
    good = [(paths[rel], label, rel) for rel, label, kind in order if kind == "good"]
    assert report.num_written == len(good) == 4
    assert report.num_failed == len(bad) == 4
    assert [(f.index, f.source) for f in report.failures] == [(i, p) for i, p, _ in bad]
    for failure, (_, path, kind) in zip(report.failures, bad):
        assert failure.reason and re.search(REASON[kind], failure.reason, re.I), \
            (kind, failure.reason)
        assert str(failure).startswith(path + ": ")

    assert report.error_log == str(out) + ".errors.tsv"
    rows = read_error_log(report.error_log)
    assert [(i, s) for i, s, _ in rows] == [(i, p) for i, p, _ in bad]
    assert all(reason for _, _, reason in rows)

    recs = read_all(out)
    assert [r["label"] for r in recs] == [label for _, label, _ in good]
    for rec, (_, _, rel) in zip(recs, good):
        name = os.path.splitext(os.path.basename(rel))[0]
        with open(paths[rel], "rb") as f:
            src = f.read()
        if rel.endswith(".png"):        # re-encoded: jpg mode
            assert_reencoded_close(rec["image"], GOOD[name])
        else:                           # kept as is
            assert np.array_equal(rec["image"], simplejpeg.decode_jpeg(src, colorspace="RGB"))


def test_bad_file_fails_the_write_and_keeps_the_older_file(tmp_path):
    order, paths = bad_folder(tmp_path)
    first_bad = next(paths[rel] for rel, _, kind in order if kind != "good")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "out.beton"
    older = b"an older .beton file that must survive\n" * 1000
    out.write_bytes(older)
    with pytest.raises(WriteError) as info:
        write(tmp_path / "data", out, on_error="fail")
    assert first_bad in str(info.value)
    assert str(info.value).startswith(first_bad + ": ")
    assert out.read_bytes() == older
    assert os.listdir(out_dir) == ["out.beton"]      # no .partial file, no error log

    out.unlink()
    with pytest.raises(WriteError):
        write(tmp_path / "data", out, on_error="fail")
    assert os.listdir(out_dir) == []


@pytest.mark.parametrize("kind,make", [
    ("truncated", lambda: first_60_percent(encode_pil(photo(64, 48, seed=12), quality=90))),
    ("truncated", lambda: first_60_percent(encode_pil(photo(64, 48, seed=12), quality=90,
                                                      progressive=True))),
    ("truncated", lambda: first_60_percent(encode_pil(photo(64, 48, seed=12)[:, :, 0],
                                                      quality=90))),
    ("truncated", lambda: first_60_percent(encode_pil(photo(64, 48, seed=12), "PNG"))),
    ("empty", lambda: b""),
    ("text", lambda: b"<html><body>404 not found</body></html>\n"),
], ids=["baseline-jpeg", "progressive-jpeg", "gray-jpeg", "png", "zero-bytes", "html"])
def test_unreadable_file_is_reported(tmp_path, kind, make):
    data = make()
    paths = make_tree(tmp_path / "data" / "train", {
        "a/bad.JPEG": data, "a/good.JPEG": encode_pil(photo(16, 16), quality=90)})
    report = write(tmp_path / "data", tmp_path / "out.beton", on_error="skip")
    assert report.num_written == 1
    assert [(f.index, f.source) for f in report.failures] == [(0, paths["a/bad.JPEG"])]
    assert re.search(REASON[kind], report.failures[0].reason, re.I), report.failures[0].reason


def test_corrupt_jpegs_are_reported(tmp_path):
    """Random bytes after a valid header: decoding them would store noise as a training image.

    40 such files (different garbage each) and one good file: every corrupt one must be
    reported, none stored."""
    files = {f"a/bad{seed:02d}.JPEG": corrupt_jpeg(seed) for seed in range(40)}
    assert all(fdjpeg.parse_header(data).is_plain_rgb for data in files.values())  # headers fine
    files["a/good.JPEG"] = encode_pil(photo(16, 16), quality=90)
    paths = make_tree(tmp_path / "data" / "train", files)
    report = write(tmp_path / "data", tmp_path / "out.beton", on_error="skip")
    reported = {f.source for f in report.failures}
    stored = sorted(rel for rel, path in paths.items() if rel != "a/good.JPEG"
                    and path not in reported)
    assert stored == [], f"corrupt JPEGs stored instead of reported: {stored}"
    assert report.num_written == 1 and report.num_failed == 40


# -- hidden, stray and empty --------------------------------------------------------------------
def test_hidden_and_stray_entries_are_ignored(tmp_path):
    jpg = encode_pil(photo(20, 20, seed=13), quality=90)
    root = tmp_path / "data" / "train"
    paths = make_tree(root, {
        "a/x.JPEG": jpg,
        "a/.DS_Store": b"\x00\x00\x00\x01Bud1\x00" + bytes(200),
        "a/._x.JPEG": b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(100),
        "a/.cache/y.JPEG": b"not an image",
        "a/sub/z.jpg": jpg,
        "b/w.png": encode_pil(photo(20, 20, seed=14), "PNG"),
        "b/.DS_Store": b"junk",
        ".ipynb_checkpoints/q.JPEG": b"not an image either",
        ".hidden_class/r.JPEG": jpg,
        "README.txt": b"class folders below\n",
        "labels.csv": b"a,0\nb,1\n",
    })
    with pytest.warns(UserWarning) as record:
        folder = ImageNetFolder.scan(str(root))
    assert folder.classes == ["a", "b"]
    assert folder.samples == [(paths["a/x.JPEG"], 0), (paths["a/sub/z.jpg"], 0),
                              (paths["b/w.png"], 1)]
    messages = " | ".join(str(w.message) for w in record)
    assert "README.txt" in messages or "labels.csv" in messages     # stray files are named
    assert "files beside the class folders" in messages

    out = tmp_path / "out.beton"
    with pytest.warns(UserWarning):
        report = write(tmp_path / "data", out, on_error="fail")
    assert report.num_written == 3 and report.failures == []
    assert [r["label"] for r in read_all(out)] == [0, 0, 1]


@pytest.mark.parametrize("contents", [
    {}, {"notes.txt": b"no images here"}, {".DS_Store": b"junk", "._a.JPEG": b"junk"},
    {".hidden/x.JPEG": None}], ids=["nothing", "text-only", "hidden-only", "hidden-subfolder"])
def test_empty_class_folder_is_an_error(tmp_path, capsys, contents):
    jpg = encode_pil(photo(20, 20, seed=15), quality=90)
    root = tmp_path / "data" / "train"
    make_tree(root, {"a/x.JPEG": jpg, "c/y.JPEG": jpg})
    (root / "b_empty").mkdir()
    make_tree(root / "b_empty", {k: (v if v is not None else jpg) for k, v in contents.items()})
    empty_dir = os.path.join(str(root), "b_empty")
    with pytest.raises(ValueError, match=re.escape(empty_dir)):
        ImageNetFolder.scan(str(root))
    out = tmp_path / "out.beton"
    with pytest.raises(ValueError, match=re.escape(empty_dir)):
        write(tmp_path / "data", out)
    assert not out.exists()

    capsys.readouterr()
    status = cli_main(["write", "imagenet", "--data-dir", str(tmp_path / "data"),
                       "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert status == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("fastdata: error:") and empty_dir in lines[0]
    assert not out.exists()


# -- the command line ---------------------------------------------------------------------------
def test_cli_skip_lists_skipped_files_and_exits_0(tmp_path, capsys):
    order, paths = bad_folder(tmp_path)
    out = tmp_path / "out.beton"
    status = cli_main(["write", "imagenet", "--data-dir", str(tmp_path / "data"),
                       "--out", str(out), "--on-error", "skip", "--quiet", "--workers", "2"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "Traceback" not in captured.out + captured.err
    bad = [paths[rel] for rel, _, kind in order if kind != "good"]
    skipped = [line for line in captured.out.splitlines() if line.startswith("skipped: ")]
    assert [line[len("skipped: "):].split(": ")[0] for line in skipped] == bad
    assert "wrote 4 samples" in captured.out
    last = captured.out.strip().splitlines()[-1]
    assert "4" in last and str(out) + ".errors.tsv" in last     # the summary ends the output
    assert [s for _, s, _ in read_error_log(str(out) + ".errors.tsv")] == bad
    assert [r["label"] for r in read_all(out)] == [lbl for _, lbl, k in order if k == "good"]


def test_cli_fail_prints_one_error_line(tmp_path, capsys):
    order, paths = bad_folder(tmp_path)
    first_bad = next(paths[rel] for rel, _, kind in order if kind != "good")
    out = tmp_path / "out" / "out.beton"
    out.parent.mkdir()
    status = cli_main(["write", "imagenet", "--data-dir", str(tmp_path / "data"),
                       "--out", str(out), "--on-error", "fail", "--quiet"])
    captured = capsys.readouterr()
    assert status != 0
    assert "Traceback" not in captured.out + captured.err
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("fastdata: error:") and first_bad in lines[0]
    assert os.listdir(out.parent) == []


def test_cli_missing_data_dir(tmp_path, capsys):
    missing = tmp_path / "no_such_folder"
    out = tmp_path / "out.beton"
    status = cli_main(["write", "imagenet", "--data-dir", str(missing), "--out", str(out),
                       "--quiet"])
    captured = capsys.readouterr()
    assert status == 1
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("fastdata: error:")
    assert str(missing) in lines[0]
    assert "Traceback" not in captured.err
    assert not out.exists()


@pytest.mark.parametrize("argv,words", [
    (["write", "imagenet", "--help"], ["--data-dir", "--on-error", "--max-resolution"]),
    (["inspect", "--help"], ["file", "--dump"]),
    (["--help"], ["write", "inspect"]),
])
def test_cli_help(capsys, argv, words):
    with pytest.raises(SystemExit) as info:
        cli_main(argv)
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: fastdata")
    for word in words:
        assert word in out


# -- interrupted writes -------------------------------------------------------------------------
KILLED_WRITER = textwrap.dedent("""
    import sys, time
    from fastdata import RGBImageField
    from fastdata.writers import write_imagenet

    class SlowField(RGBImageField):
        # a few ms per image: the write lasts seconds, so the test can kill it mid-way
        def encode(self, value, index):
            time.sleep(0.01)
            return super().encode(value, index)

    write_imagenet(sys.argv[1], sys.argv[2], split=None, image_field=SlowField(),
                   num_workers=1, progress=False)
    print("finished")
""")


def test_killed_writer_leaves_nothing_at_the_output_path(tmp_path):
    data = tmp_path / "data"
    files = {}
    variants = [encode_pil(photo(48, 32, seed=30 + k), quality=85) for k in range(4)]
    for k in range(300):
        files[f"c{k % 3}/img{k:04d}.JPEG"] = variants[k % 4]
    make_tree(data, files)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "train.beton"

    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(data), str(out)],
                            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        partial = []
        while proc.poll() is None and time.monotonic() < deadline:
            partial = glob.glob(str(out_dir / "*.partial"))
            if partial:
                break
            time.sleep(0.002)
        assert partial, f"no .partial file appeared (exit {proc.poll()}): " \
                        f"{proc.stderr.read().decode() if proc.poll() is not None else ''}"
        time.sleep(0.3)            # let it write a while
        assert proc.poll() is None, "the writer finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    leftovers = os.listdir(out_dir)
    assert all(name.startswith("train.beton.") and name.endswith(".partial")
               for name in leftovers), leftovers


class InterruptedDataset:
    """200 samples; reading sample 50 raises KeyboardInterrupt (as Ctrl-C would)."""

    def __len__(self) -> int:
        return 200

    def __getitem__(self, i: int):
        if i == 50:
            raise KeyboardInterrupt
        return np.full((8, 8, 3), i % 256, dtype=np.uint8), i


@pytest.mark.parametrize("on_error", ["fail", "skip"])
@pytest.mark.parametrize("older", [False, True])
def test_keyboard_interrupt_propagates_and_leaves_nothing(tmp_path, on_error, older):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "ds.beton"
    if older:
        out.write_bytes(b"older file")
    writer = DatasetWriter(str(out), {"image": RGBImageField(), "label": IntField()},
                           num_workers=2, on_error=on_error, progress=False)
    with pytest.raises(KeyboardInterrupt):
        writer.from_indexed_dataset(InterruptedDataset())
    if older:
        assert out.read_bytes() == b"older file"
        assert os.listdir(out_dir) == ["ds.beton"]
    else:
        assert not out.exists()
        assert os.listdir(out_dir) == []
