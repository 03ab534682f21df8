"""Live compatibility with FFCV 1.0.2, both ways, through a real FFCV install.

FFCV is not a dependency of fastdata (it needs a compiler, libturbojpeg and OpenCV to build), so
these tests run only when ``FASTDATA_FFCV_PYTHON`` names a Python interpreter that can
``import ffcv`` (``.ci/ffcv_venv.sh DIR`` builds one); otherwise they are skipped, or fail when
``FASTDATA_REQUIRE_FFCV=1`` (as ``.ci/run`` sets it, so that CI never skips them).  Each test runs a helper script under that
interpreter (it has ffcv, numpy, torch, cv2; not fastdata) and exchanges files through tmp_path:

a. a file fastdata writes with every FFCV field type and edge values is read by FFCV's own Reader,
   OSCacheManager, JPEG decoder (libffcv ``imdecode``) and Loader with the same values;
b. a file FFCV's DatasetWriter writes (several worker processes, every field type) is read by
   fastdata.Reader with the same values;
c. fastdata's extras (non-zero RGBImageField arguments, a side-table allocation with sample id
   2**64-1) do not disturb FFCV: its Loader in QUASI_RANDOM order, with the OS cache and with its
   process cache, yields every sample exactly once per epoch.

d. files with fastdata's own field types (label maps, reinforcement records, top-k targets) are
   refused by FFCV's Reader and Loader when opened (an unknown type id), never misread.

Also: a rare FFCV file shape (an empty first value, recorded before the data pages) reads.

The committed fixtures in tests/fixtures cover direction b offline; this is the live version.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest
import simplejpeg
from PIL import Image

import fastdata
from fastdata import (BytesField, DatasetWriter, FloatField, IntField, JSONField, NDArrayField,
                      Reader, RGBImageField, TorchTensorField)
from fastdata import format as fmt
from fastdata.pixels import jpeg as fd_jpeg

ENV = "FASTDATA_FFCV_PYTHON"
PAGE_SIZE = 1 << 21
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
SCRIPT_TIMEOUT = 300
# FFCV decodes JPEGs with libjpeg-turbo's fast integer IDCT (TJFLAG_FASTDCT); fastdata decodes
# with the accurate one (simplejpeg's default).  Same library, same stream: FFCV's pixels equal a
# fast-IDCT decode bit for bit, and differ from fastdata's by this much on average at most
# (measured: 0.9-1.1 on 4:2:0 q75-90, 1.8 on a 4:4:4 q95 stream; max 6 per channel).
MAX_MEAN_IDCT_DIFF = 2.0
MAX_IDCT_DIFF = 10


# -- running FFCV --------------------------------------------------------------------------------
REQUIRE_ENV = "FASTDATA_REQUIRE_FFCV"


def ffcv_unavailable(reason: str):
    """Skip, or fail where FFCV must be there (``.ci/run`` sets FASTDATA_REQUIRE_FFCV=1)."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def ffcv_python() -> str:
    exe = os.environ.get(ENV)
    if not exe:
        ffcv_unavailable(f"live FFCV compatibility tests need {ENV}=<path to a python that can "
                         f"`import ffcv`> (FFCV 1.0.2; .ci/ffcv_venv.sh DIR builds one); not set")
    if not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
        ffcv_unavailable(f"{ENV}={exe} is not an executable file")
    probe = subprocess.run(
        [exe, "-c", "import ffcv, importlib.metadata as m; print(m.version('ffcv'))"],
        capture_output=True, text=True, timeout=SCRIPT_TIMEOUT)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        ffcv_unavailable(f"{ENV}={exe} cannot import ffcv: {last}")
    return exe


def run_ffcv(exe: str, script: str, *args, cwd) -> None:
    """Run ``script`` (Python source) under the FFCV interpreter; fail with its output."""
    path = os.path.join(cwd, "ffcv_helper.py")
    with open(path, "w", encoding="utf-8") as f:
        f.write(textwrap.dedent(script))
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONIOENCODING="utf-8")
    env.pop("PYTHONPATH", None)     # fastdata must not leak into FFCV's interpreter
    proc = subprocess.run([exe, path, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=SCRIPT_TIMEOUT, env=env)
    if proc.returncode != 0:
        pytest.fail(f"FFCV helper failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                    f"{proc.stderr[-6000:]}")


# Shared by the helper scripts: FFCV's own path from a file to each field's values.
FFCV_DUMP = r'''
import json, sys
import numpy as np
from ffcv.reader import Reader
from ffcv.memory_managers import OSCacheManager
from ffcv.libffcv import imdecode
from ffcv.fields.json import JSONField


def dump_with_reader(path, arrays, info):
    """Every field of every sample, read as FFCV reads it: Reader + OSCacheManager's compiled
    read() (lookup by pointer in the sorted allocation table) + libffcv's imdecode for JPEGs."""
    reader = Reader(path)
    n = int(reader.num_samples)
    manager = OSCacheManager(reader)
    read = manager.compile_reader()
    context = manager.schedule_epoch(None)
    context.__enter__()
    state = context.state
    info.update(num_samples=n, page_size=int(reader.page_size), fields={})
    for k, (name, handler) in enumerate(reader.handlers.items()):
        desc = reader.field_descriptors[k]
        col = reader.metadata[f"f{k}"]
        fi = info["fields"][name] = dict(type_id=int(desc["type_id"]),
                                         handler=type(handler).__name__,
                                         args_nonzero=int(np.count_nonzero(desc["arguments"])))
        tid = fi["type_id"]
        if tid in (0, 1):
            arrays[f"{name}__values"] = np.array(col)
        elif tid == 2:
            fi.update(mode=[int(x) for x in col["mode"]], width=[int(x) for x in col["width"]],
                      height=[int(x) for x in col["height"]], decode_rc=[])
            for i in range(n):
                h, w = int(col["height"][i]), int(col["width"][i])
                data = read(np.uint64(col["data_ptr"][i]), state)
                arrays[f"{name}__payload__{i}"] = np.array(data)
                if int(col["mode"][i]) == 1:
                    pixels = np.array(data[:h * w * 3]).reshape(h, w, 3)
                    fi["decode_rc"].append(None)
                else:
                    pixels = np.zeros((h, w, 3), dtype=np.uint8)
                    # exactly SimpleRGBImageDecoder's call
                    rc = imdecode(np.ascontiguousarray(data), pixels, h, w, h, w, 0, 0, 1, 1,
                                  False, False)
                    fi["decode_rc"].append(int(rc))
                arrays[f"{name}__pixels__{i}"] = pixels
        elif tid in (3, 5):
            fi["size"] = [int(x) for x in col["size"]]
            values = []
            for i in range(n):
                data = np.array(read(np.uint64(col["ptr"][i]), state))
                arrays[f"{name}__region__{i}"] = data
                if tid == 5:
                    values.append(JSONField.unpack(data))
            if tid == 5:
                fi["json"] = values
        elif tid in (4, 6):
            fi.update(dtype=np.dtype(handler.dtype).str, shape=[int(s) for s in handler.shape],
                      short_reads=[])
            for i in range(n):
                data = np.array(read(np.uint64(col[i]), state))
                arrays[f"{name}__region__{i}"] = data
                if data.size != int(handler.element_size):
                    # FFCV's read() takes the first region at the pointer: an empty value that
                    # shares its pointer with this array (FFCV's own writer does that) hides it
                    fi["short_reads"].append(i)
                    continue
                arrays[f"{name}__value__{i}"] = data.view(handler.dtype).reshape(handler.shape)
    info["alloc_sample_ids"] = [int(x) for x in reader.alloc_table["sample_id"]]
    return reader
'''


# -- a. fastdata writes, FFCV reads --------------------------------------------------------------
def smooth_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A photo-like image (gradients plus mild noise): JPEG keeps it close to the source."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([x * 200 / max(w, 1), y * 200 / max(h, 1), (x + y) * 100 / max(w + h, 1)], -1)
    base += rng.uniform(0, 50, 3) + rng.normal(0, 4, (h, w, 3))
    return np.clip(base, 0, 255).astype(np.uint8)


def ffcv_resize(rgb: np.ndarray, max_res: int) -> np.ndarray:
    """FFCV's writer resize rule and filter (fields/rgb_image.py: resizer), with fastdata's
    guard that a side never drops to 0."""
    h, w = rgb.shape[:2]
    ratio = max_res / max(w, h)
    if ratio >= 1:
        return rgb
    nw, nh = (ratio * np.array([w, h])).astype(int)
    return cv2.resize(rgb, (max(1, int(nw)), max(1, int(nh))), interpolation=cv2.INTER_AREA)


def pil_jpeg(rgb: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", **kw)
    return buf.getvalue()


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def check_ffcv_jpeg_pixels(ffcv_pixels: np.ndarray, our_pixels: np.ndarray, payload: bytes,
                           what) -> None:
    """FFCV's decode of ``payload`` is libjpeg-turbo's fast-IDCT decode, exactly; fastdata's
    decode of it differs only by the IDCT's rounding."""
    assert np.array_equal(ffcv_pixels, simplejpeg.decode_jpeg(payload, fastdct=True)), what
    assert ffcv_pixels.shape == our_pixels.shape, what
    diff = np.abs(ffcv_pixels.astype(np.int16) - our_pixels.astype(np.int16))
    assert diff.mean() <= MAX_MEAN_IDCT_DIFF and diff.max() <= MAX_IDCT_DIFF, (what, diff.mean(),
                                                                               diff.max())


def bits(a) -> np.ndarray:
    """Bit patterns, so that nan, -0.0 and inf compare exactly."""
    a = np.ascontiguousarray(a)
    return a.view(np.dtype(f"u{a.dtype.itemsize}")) if a.dtype.kind == "f" else a


N_A = 7
RAW_MAX, JPG_MAX, PROP_MAX = 48, 32, 16


def fastdata_samples_a() -> tuple[dict, list[tuple]]:
    rng = np.random.default_rng(1234)
    raw_sizes = [(1, 1), (3, 5), (17, 13), (64, 33), (2, 99), (48, 48), (5, 1)]      # (h, w)
    jpg_sizes = [(1, 1), (7, 9), (31, 33), (40, 40), None, (13, 21), (100, 3)]       # None: JPEG
    prop_sizes = [(24, 32), (48, 64), (12, 16), (30, 40), (60, 80), (36, 48), (120, 160)]
    source_jpeg = pil_jpeg(smooth_image(rng, 13, 21), quality=95, subsampling=0,
                           comment=b"metadata that fastdata strips")
    floats = [0.0, -0.0, float("inf"), float("-inf"), float("nan"), 1.7976931348623157e308,
              5e-324]
    ints = [INT64_MIN, INT64_MAX, 0, -1, 1, (1 << 53) + 1, -(1 << 62)]
    blobs = [b"", b"\x00", b"abc\x00def", bytes(range(256)) * 3,
             rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(), b"\xff", b""]
    f32 = np.finfo(np.float32)
    arrays = [np.arange(12, dtype=np.float32).reshape(3, 4) * k - 3 for k in range(N_A)]
    arrays[1][0, :] = [np.nan, np.inf, -np.inf, -0.0]
    arrays[2][1, :] = [f32.max, f32.min, f32.tiny, f32.smallest_subnormal]
    jsons = [{"s": "héllo wörld ✓ 日本語 😀", "n": [1, 2.5, None, True]},
             {"nul": "a\u0000b", "quote": "\"'\\", "nl": "line\nbreak"},
             [], {}, "", 0, {"deep": [[{"x": ["é" * 50]}]], "big": INT64_MAX}]
    tensors = [np.array([INT64_MIN, INT64_MAX, 0, -1, k], dtype=np.int64) for k in range(N_A)]
    samples = []
    for i in range(N_A):
        jpg_value = source_jpeg if jpg_sizes[i] is None else smooth_image(rng, *jpg_sizes[i])
        samples.append((floats[i], ints[i], smooth_image(rng, *raw_sizes[i]), jpg_value,
                        smooth_image(rng, *prop_sizes[i]), blobs[i], arrays[i], jsons[i],
                        tensors[i], i))
    fields = {
        "f": FloatField(), "label": IntField(),
        "raw": RGBImageField(write_mode="raw", max_resolution=RAW_MAX),
        "jpg": RGBImageField(write_mode="jpg", max_resolution=JPG_MAX, jpeg_quality=90),
        "prop": RGBImageField(write_mode="proportion", max_resolution=PROP_MAX,
                              compress_probability=0.5, jpeg_quality=75, seed=1),
        "blob": BytesField(), "arr": NDArrayField(np.float32, (3, 4)), "meta": JSONField(),
        "tens": TorchTensorField("torch.int64", (5,)), "index": IntField(),
    }
    return fields, samples


READ_A = FFCV_DUMP + r'''
from ffcv.loader import Loader, OrderOption
from ffcv.fields.decoders import (FloatDecoder, IntDecoder, BytesDecoder, NDArrayDecoder,
                                  SimpleRGBImageDecoder)

path, out = sys.argv[1], sys.argv[2]
arrays, info = {}, {}
reader = dump_with_reader(path, arrays, info)

# The Loader, sequential, batch size 1, one decoder per field; images only where every image of
# the field has one size (SimpleRGBImageDecoder's requirement).
decoders = {0: FloatDecoder, 1: IntDecoder, 3: BytesDecoder, 4: NDArrayDecoder, 5: BytesDecoder,
            6: NDArrayDecoder}
pipelines = {}
for name, fi in info["fields"].items():
    if fi["type_id"] == 2:
        uniform = len(set(zip(fi["width"], fi["height"]))) == 1
        pipelines[name] = [SimpleRGBImageDecoder()] if uniform else None
    else:
        pipelines[name] = [decoders[fi["type_id"]]()]
loader = Loader(path, batch_size=1, num_workers=1, order=OrderOption.SEQUENTIAL,
                pipelines=pipelines, drop_last=False, os_cache=True)
names = [n for n in reader.handlers if pipelines[n] is not None]
count = 0
for i, batch in enumerate(loader):
    assert len(batch) == len(names), (len(batch), names)
    for name, value in zip(names, batch):
        arrays[f"{name}__loader__{i}"] = np.array(value)[0].copy()
    count += 1
info["loader_fields"] = names
info["loader_batches"] = count
np.savez(f"{out}/arrays.npz", **arrays)
with open(f"{out}/info.json", "w", encoding="utf-8") as f:
    json.dump(info, f, ensure_ascii=False)
'''


def test_fastdata_file_reads_in_ffcv(ffcv_python, tmp_path):
    fields, samples = fastdata_samples_a()
    path = tmp_path / "fastdata_all.beton"
    report = DatasetWriter(path, fields, page_size=PAGE_SIZE, num_workers=2,
                           progress=False).from_indexed_dataset(samples)
    assert report.num_written == N_A
    run_ffcv(ffcv_python, READ_A, path, tmp_path, cwd=tmp_path)
    info = json.loads((tmp_path / "info.json").read_text(encoding="utf-8"))
    with np.load(tmp_path / "arrays.npz") as npz:
        arrays = dict(npz)
    names = list(fields)
    assert info["num_samples"] == N_A and info["page_size"] == PAGE_SIZE
    assert list(info["fields"]) == names
    assert [info["fields"][n]["type_id"] for n in names] == [f.TYPE_ID for f in fields.values()]
    cols = list(zip(*samples))
    col = dict(zip(names, cols))

    # scalars, bit for bit (nan, -0.0, inf, int64 extremes)
    assert np.array_equal(bits(arrays["f__values"]), bits(np.array(col["f"], dtype=np.float64)))
    assert arrays["label__values"].dtype == np.int64
    assert arrays["label__values"].tolist() == list(col["label"])
    assert arrays["index__values"].tolist() == list(range(N_A))

    # bytes: FFCV's region (looked up by pointer) is exactly the value, empty ones included
    assert info["fields"]["blob"]["size"] == [len(b) for b in col["blob"]]
    for i, blob in enumerate(col["blob"]):
        assert arrays[f"blob__region__{i}"].tobytes() == blob, i

    # JSON: FFCV's own unpack gives the same objects
    assert info["fields"]["meta"]["json"] == list(col["meta"])

    # arrays and tensors
    for name, dtype, shape in (("arr", "<f4", [3, 4]), ("tens", "<i8", [5])):
        fi = info["fields"][name]
        assert (fi["dtype"], fi["shape"]) == (dtype, shape), name
        assert fi["short_reads"] == [], name   # fastdata never lets regions share a pointer
        for i, value in enumerate(col[name]):
            got = arrays[f"{name}__value__{i}"]
            assert got.dtype == np.dtype(dtype) and np.array_equal(bits(got), bits(value)), (name,
                                                                                             i)

    with Reader(path) as ours:
        # images: FFCV sees the same records, the same payload bytes, the same pixels
        for name in ("raw", "jpg", "prop"):
            fi = info["fields"][name]
            k = names.index(name)
            meta = ours.metadata[f"f{k}"]
            assert fi["mode"] == meta["mode"].tolist(), name
            assert fi["width"] == meta["width"].tolist(), name
            assert fi["height"] == meta["height"].tolist(), name
            # fastdata's settings live in the arguments FFCV ignores
            assert fi["args_nonzero"] > 0 and fi["handler"] == "RGBImageField"
            for i in range(N_A):
                payload = arrays[f"{name}__payload__{i}"]
                assert payload.tobytes() == ours.payload(i, name).tobytes(), (name, i)
                ffcv_pixels = arrays[f"{name}__pixels__{i}"]
                our_pixels = ours.read(i, name)
                assert ffcv_pixels.shape == our_pixels.shape, (name, i)
                if fi["mode"][i] == 1:
                    assert np.array_equal(ffcv_pixels, our_pixels), (name, i)
                else:
                    assert fi["decode_rc"][i] == 0, (name, i)
                    check_ffcv_jpeg_pixels(ffcv_pixels, our_pixels, payload.tobytes(), (name, i))
        # raw images hold exactly FFCV's resize of the source (1x1 and odd sizes included)
        for i, src in enumerate(col["raw"]):
            assert np.array_equal(arrays[f"raw__pixels__{i}"], ffcv_resize(src, RAW_MAX)), i
        # JPEGs are the right images
        for i, src in enumerate(col["jpg"]):
            if isinstance(src, bytes):     # a source JPEG stored as it is (4:4:4, COM stripped)
                kept = fd_jpeg.strip_metadata(src, fd_jpeg.parse_header(src))
                assert arrays[f"jpg__payload__{i}"].tobytes() == kept and len(kept) < len(src)
                src_pixels = np.asarray(Image.open(io.BytesIO(src)).convert("RGB"))
                assert mean_abs_diff(arrays[f"jpg__pixels__{i}"], src_pixels) <= MAX_MEAN_IDCT_DIFF
            else:
                expected = ffcv_resize(src, JPG_MAX)
                if expected.shape[0] * expected.shape[1] >= 64:   # tiny ones lose much to 4:2:0
                    assert mean_abs_diff(arrays[f"jpg__pixels__{i}"], expected) < 6, i
        prop_modes = set(info["fields"]["prop"]["mode"])
        assert prop_modes == {0, 1}, "proportion mode should mix JPEG and raw here"

    # The Loader (sequential, batch size 1) gives what the memory-manager reads gave.
    assert info["loader_batches"] == N_A
    assert info["loader_fields"] == [n for n in names if n not in ("raw", "jpg")]
    for i in range(N_A):
        for name in ("f", "label", "index"):
            assert np.array_equal(bits(arrays[f"{name}__loader__{i}"]),
                                  bits(arrays[f"{name}__values"][i:i + 1])), (name, i)
        for name in ("blob", "meta"):
            size = info["fields"][name]["size"][i]
            assert (arrays[f"{name}__loader__{i}"][:size].tobytes()
                    == arrays[f"{name}__region__{i}"].tobytes()), (name, i)
        for name in ("arr", "tens"):
            assert np.array_equal(bits(arrays[f"{name}__loader__{i}"]),
                                  bits(arrays[f"{name}__value__{i}"])), (name, i)
        assert np.array_equal(arrays[f"prop__loader__{i}"], arrays[f"prop__pixels__{i}"]), i


# -- b. FFCV writes, fastdata reads --------------------------------------------------------------
WRITE_B = FFCV_DUMP + r'''
import torch
from ffcv.writer import DatasetWriter
from ffcv.fields import (FloatField, IntField, RGBImageField, BytesField, NDArrayField,
                         JSONField, TorchTensorField)
from ffcv.fields.rgb_image import resizer

path, out = sys.argv[1], sys.argv[2]
N = 16
rng = np.random.default_rng(7)


def smooth(h, w):
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([x * 200 / w, y * 200 / h, (x + y) * 100 / (w + h)], -1)
    base += rng.uniform(0, 50, 3) + rng.normal(0, 4, (h, w, 3))
    return np.clip(base, 0, 255).astype(np.uint8)


sizes = [(1, 1), (2, 3), (17, 13), (40, 64), (33, 7), (64, 64), (5, 9), (31, 29)] * 2
i64 = np.iinfo(np.int64)
floats = [0.0, -0.0, np.inf, -np.inf, np.nan, 1.5e308, 5e-324, -1.25] * 2
ints = [int(i64.min), int(i64.max), 0, -1, 1, 2 ** 53 + 1, -(2 ** 62), 42] * 2
samples = []
for i in range(N):
    # an empty blob never comes first on a worker's page (FFCV would point it before the data)
    blob = b"" if i in (5, 11) else rng.integers(0, 256, int(rng.integers(1, 3000)),
                                                  dtype=np.uint8).tobytes()
    arr = rng.normal(size=(3, 4)).astype(np.float32)
    if i == 2:
        arr[0, :] = [np.nan, np.inf, -np.inf, -0.0]
    meta = {"i": i, "s": "ünïcødé ✓ 日本 😀" * (i % 3), "l": [None, True, 1.5, i64.max]}
    tens = torch.tensor([int(i64.min), int(i64.max), i, -i, 7], dtype=torch.int64)
    samples.append((floats[i], ints[i], smooth(*sizes[i]), smooth(*sizes[i][::-1]),
                    np.frombuffer(blob, dtype=np.uint8), arr, meta, tens))


class DS:
    def __len__(self):
        return N

    def __getitem__(self, i):
        return samples[i]


fields = {
    "f": FloatField(), "label": IntField(), "raw": RGBImageField(write_mode="raw"),
    "img": RGBImageField(write_mode="proportion", max_resolution=24, compress_probability=0.5,
                         jpeg_quality=85),
    "blob": BytesField(), "arr": NDArrayField(np.dtype("float32"), (3, 4)), "meta": JSONField(),
    "tens": TorchTensorField(torch.int64, (5,)),
}
DatasetWriter(path, fields, page_size=1 << 21, num_workers=2).from_indexed_dataset(DS(),
                                                                                   chunksize=3)

arrays, info = {}, {}
dump_with_reader(path, arrays, info)
info["expected"] = {"meta": [s[6] for s in samples]}
arrays["expected__f"] = np.array(floats, dtype=np.float64)
arrays["expected__label"] = np.array(ints, dtype=np.int64)
for i, s in enumerate(samples):
    arrays[f"expected__raw__{i}"] = s[2]
    arrays[f"expected__img__{i}"] = resizer(s[3], 24)
    arrays[f"expected__blob__{i}"] = s[4]
    arrays[f"expected__arr__{i}"] = s[5]
    arrays[f"expected__tens__{i}"] = s[7].numpy()
np.savez(f"{out}/arrays.npz", **arrays)
with open(f"{out}/info.json", "w", encoding="utf-8") as f:
    json.dump(info, f, ensure_ascii=False)
'''


def test_ffcv_file_reads_in_fastdata(ffcv_python, tmp_path):
    path = tmp_path / "ffcv_all.beton"
    run_ffcv(ffcv_python, WRITE_B, path, tmp_path, cwd=tmp_path)
    info = json.loads((tmp_path / "info.json").read_text(encoding="utf-8"))
    with np.load(tmp_path / "arrays.npz") as npz:
        arrays = dict(npz)
    n = info["num_samples"]
    assert n == 16
    with Reader(path) as r:
        assert len(r) == n and r.page_size == PAGE_SIZE
        assert r.field_names == ["f", "label", "raw", "img", "blob", "arr", "meta", "tens"]
        assert [type(f) for f in r.fields.values()] == [
            FloatField, IntField, RGBImageField, RGBImageField, BytesField, NDArrayField,
            JSONField, TorchTensorField]
        assert r.fields["arr"].dtype == np.float32 and r.fields["arr"].shape == (3, 4)
        assert r.fields["tens"].dtype == np.int64 and r.fields["tens"].shape == (5,)
        # FFCV's workers fill pages in turn: payloads of several pages, table unordered
        assert r.side_table("raw") is None and r.side_table("img") is None
        # FFCV stores an empty value as a zero-size region at the next region's pointer; its own
        # reader then sees that array as empty (at most the samples with an empty blob, 5 and
        # 11), while fastdata resolves the pointer to the real region (checked below).
        assert set(info["fields"]["arr"]["short_reads"]) <= {5, 11}
        for i in range(n):
            f, label, raw, img, blob, arr, meta, tens = r[i]
            assert isinstance(f, float) and bits(np.float64(f)) == bits(arrays["expected__f"][i])
            assert isinstance(label, int) and label == int(arrays["expected__label"][i])
            assert np.array_equal(raw, arrays[f"expected__raw__{i}"]), i
            assert blob == arrays[f"expected__blob__{i}"].tobytes(), i
            assert np.array_equal(bits(arr), bits(arrays[f"expected__arr__{i}"])), i
            assert meta == info["expected"]["meta"][i] == info["fields"]["meta"]["json"][i], i
            assert tens.dtype == np.int64 and np.array_equal(tens, arrays[f"expected__tens__{i}"])
            # images: same records and payloads as FFCV's reader; same pixels as FFCV's decoder
            fi = info["fields"]["img"]
            mode = fi["mode"][i]
            assert img.shape == (fi["height"][i], fi["width"][i], 3), i
            assert img.shape == arrays[f"expected__img__{i}"].shape, i
            assert r.payload(i, "img").tobytes() == arrays[f"img__payload__{i}"].tobytes(), i
            if mode == 1:
                assert np.array_equal(img, arrays[f"expected__img__{i}"]), i
            else:
                assert fi["decode_rc"][i] == 0
                check_ffcv_jpeg_pixels(arrays[f"img__pixels__{i}"], img,
                                       arrays[f"img__payload__{i}"].tobytes(), i)
                if img.shape[0] * img.shape[1] >= 64:    # tiny ones lose much to 4:2:0
                    assert mean_abs_diff(img, arrays[f"expected__img__{i}"]) < 8, i
            assert r.original_size(i, "img") == (fi["width"][i], fi["height"][i])


EMPTY_FIRST_B = r'''
import sys
import numpy as np
from ffcv.writer import DatasetWriter
from ffcv.fields import BytesField, IntField

VALUES = [b"", b"abc", b"", b"hello"]


class DS:
    def __len__(self):
        return len(VALUES)

    def __getitem__(self, i):
        return i, np.frombuffer(VALUES[i], dtype=np.uint8)


DatasetWriter(sys.argv[1], {"label": IntField(), "blob": BytesField()}, page_size=1 << 21,
              num_workers=1).from_indexed_dataset(DS())
'''


def test_ffcv_file_with_empty_first_value_reads_in_fastdata(ffcv_python, tmp_path):
    # FFCV 1.0.2 records an empty first value of a worker at ptr = data_start - page_size
    # (before the data pages); a zero-size region reads nothing, so fastdata accepts it.
    path = tmp_path / "ffcv_empty_first.beton"
    run_ffcv(ffcv_python, EMPTY_FIRST_B, path, cwd=tmp_path)
    with Reader(path) as r:
        assert [r[i] for i in range(len(r))] == [(0, b""), (1, b"abc"), (2, b""), (3, b"hello")]


# -- c. FFCV's quasi-random order over a fastdata file -------------------------------------------
N_C = 150
QUASI_C = r'''
import json, sys
import numpy as np
from ffcv.reader import Reader
from ffcv.loader import Loader, OrderOption
from ffcv.fields.decoders import IntDecoder, CenterCropRGBImageDecoder

path, out = sys.argv[1], sys.argv[2]
reader = Reader(path)
names = list(reader.handlers)
k = names.index("image")
result = {
    "image_args_nonzero": int(np.count_nonzero(reader.field_descriptors[k]["arguments"])),
    "alloc_sample_ids": [int(x) for x in reader.alloc_table["sample_id"]],
    "orders": {},
}
for os_cache in (True, False):
    loader = Loader(path, batch_size=8, num_workers=1, order=OrderOption.QUASI_RANDOM, seed=5,
                    os_cache=os_cache, drop_last=False,
                    pipelines={"image": [CenterCropRGBImageDecoder((8, 8), 1.0)],
                               "label": [IntDecoder()], "pad": None})
    epochs = []
    for epoch in range(2):
        labels = []
        for image, label in loader:
            assert tuple(image.shape[1:]) == (8, 8, 3), image.shape
            labels.extend(int(x) for x in np.array(label).reshape(-1))
        epochs.append(labels)
    result["orders"]["os_cache" if os_cache else "process_cache"] = epochs
with open(f"{out}/orders.json", "w") as f:
    json.dump(result, f)
'''


def test_ffcv_quasi_random_over_fastdata_file(ffcv_python, tmp_path):
    rng = np.random.default_rng(99)
    samples = []
    for i in range(N_C):
        h, w = int(rng.integers(9, 60)), int(rng.integers(9, 60))
        samples.append((smooth_image(rng, h, w), rng.integers(0, 256, 40_000, np.uint8), i))
    fields = {"image": RGBImageField(write_mode="proportion", max_resolution=32,
                                     compress_probability=0.5, jpeg_quality=80, seed=3),
              "pad": BytesField(), "label": IntField()}
    path = tmp_path / "quasi.beton"
    DatasetWriter(path, fields, page_size=PAGE_SIZE, num_workers=2,
                  progress=False).from_indexed_dataset(samples)
    with Reader(path) as ours:
        # what this test is about: the extras FFCV must tolerate are really in the file
        side_ids = ours.alloc_table["sample_id"] == fmt.NO_SAMPLE_ID
        assert int(side_ids.sum()) == 1 and ours.side_table("image") is not None
        pages = set((ours.alloc_table["ptr"][~side_ids] // PAGE_SIZE).tolist())
        assert len(pages) >= 3, "samples should span several pages"

    run_ffcv(ffcv_python, QUASI_C, path, tmp_path, cwd=tmp_path)
    result = json.loads((tmp_path / "orders.json").read_text())
    assert result["image_args_nonzero"] > 0
    assert (1 << 64) - 1 in result["alloc_sample_ids"]
    for cache, epochs in result["orders"].items():
        assert len(epochs) == 2
        for labels in epochs:
            assert sorted(labels) == list(range(N_C)), (cache, len(labels))
            assert labels != list(range(N_C)), f"{cache}: quasi-random order is sequential"
        assert epochs[0] != epochs[1], f"{cache}: both epochs in the same order"


# -- d. fastdata's own field types: FFCV refuses them -------------------------------------------

REFUSE_D = r'''
import json, sys
from ffcv.reader import Reader
from ffcv.loader import Loader
result = {}
for path in sys.argv[1:-1]:
    outcome = {}
    for name, opener in (("reader", lambda p: Reader(p)),
                         ("loader", lambda p: Loader(p, batch_size=2, num_workers=1))):
        try:
            opener(path)
            outcome[name] = "opened"
        except Exception as err:
            outcome[name] = f"{type(err).__name__}: {err}"
    result[path] = outcome
with open(sys.argv[-1], "w") as f:
    json.dump(result, f)
'''


def test_ffcv_refuses_fastdata_only_field_types(ffcv_python, tmp_path):
    """Label maps (type 100), reinforcement records (101) and top-k targets (102) are not FFCV
    types: FFCV's Reader and Loader raise on opening such a file (an unknown type id), rather
    than misreading its values."""
    from fastdata import LabelMapField, ReinforcementField, TopKField
    rng = np.random.default_rng(0)
    ids = np.broadcast_to(np.arange(5)[:, None, None] * 100, (5, 15, 15))   # distinct per cell
    label_map = np.stack([rng.random((5, 15, 15)), ids])
    records = [{"box": (0, 0, 8, 8), "flip": False, "ids": np.arange(3),
                "probs": np.full(3, 0.3)}] * 2
    cases = {100: (LabelMapField(), label_map), 101: (ReinforcementField(2, 3), records),
             102: (TopKField(3), (np.arange(3), np.full(3, 0.3)))}
    paths = []
    for type_id, (field, value) in cases.items():
        path = tmp_path / f"type{type_id}.beton"
        DatasetWriter(path, {"label": IntField(), "extra": field}, page_size=PAGE_SIZE,
                      progress=False).from_indexed_dataset([(i, value) for i in range(4)])
        with Reader(path) as ours:
            assert ours.fields["extra"].TYPE_ID == type_id and len(ours) == 4
        paths.append(str(path))
    run_ffcv(ffcv_python, REFUSE_D, *paths, tmp_path / "refused.json", cwd=tmp_path)
    result = json.loads((tmp_path / "refused.json").read_text())
    for path, type_id in zip(paths, cases):
        for opener, outcome in result[path].items():
            assert outcome != "opened", f"FFCV's {opener} opened {path}"
            # FFCV 1.0.2 looks the type id up in its handler table
            assert outcome.startswith("KeyError") and str(type_id) in outcome, outcome


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
