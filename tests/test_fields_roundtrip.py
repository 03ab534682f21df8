"""Round trips of every field type through DatasetWriter and Reader, with edge values.

Also checks the page layout (one page per sample), determinism across worker counts and seeds,
FFCV's max_resolution rule, JPEG bytes against OpenCV, error messages for bad values and names,
and the reader's indexing.
"""
from __future__ import annotations

import io
import json
import math
import os
import re
import struct

import cv2
import numpy as np
import pytest

import fastdata
from fastdata import format as fmt

PAGE = 1 << 21


# -- helpers ------------------------------------------------------------------------------------
def write(path, fields, samples, page_size=PAGE, num_workers=2, **kwargs):
    report = fastdata.DatasetWriter(path, fields, page_size=page_size, num_workers=num_workers,
                                    progress=False, **kwargs).from_indexed_dataset(samples)
    assert report.num_written == len(samples)
    return path


def roundtrip(tmp_path, fields, samples, name="rt.beton", **kwargs):
    path = write(tmp_path / name, fields, samples, **kwargs)
    return fastdata.Reader(path)


def float_bits(x) -> bytes:
    return struct.pack("<d", x)


def image_column(reader: fastdata.Reader, name: str) -> np.ndarray:
    return reader.metadata[f"f{reader.field_names.index(name)}"]


def stored_modes(reader, name) -> list[str]:
    return ["jpg" if m == 0 else "raw" for m in image_column(reader, name)["mode"]]


def noise_image(h, w, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def smooth_image(h, w, seed=0) -> np.ndarray:
    """A photo-like image (smooth gradients) on which JPEG at q90 is nearly lossless."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 128 + 90 * np.sin(x / 23.0 + seed) * np.cos(y / 31.0)
    g = 128 + 90 * np.cos((x + y) / 41.0 + 2 * seed)
    b = 40 + 180 * (x + 2 * y) / max(w + 2 * h, 1)
    return np.clip(np.stack([r, g, b], axis=2), 0, 255).astype(np.uint8)


def check_alloc_invariants(reader: fastdata.Reader) -> None:
    """Every sample's regions lie in one page; no region crosses a page; pointers are unique."""
    table = reader.alloc_table
    ids, ptrs, sizes = table["sample_id"], table["ptr"], table["size"]
    page = reader.page_size
    shift = page.bit_length() - 1
    assert len(np.unique(ptrs)) == len(ptrs), "allocation pointers are not unique"
    is_sample = ids != fmt.NO_SAMPLE_ID
    data_start = fmt.data_start(len(reader.field_names), reader.num_samples,
                                reader.metadata_dtype.itemsize, page)
    assert (ptrs >= data_start).all() and (ptrs + sizes <= reader.alloc_table_ptr).all()
    sample_ptrs, sample_sizes = ptrs[is_sample], sizes[is_sample]
    assert ((sample_ptrs % page) + sample_sizes <= page).all(), "a region crosses a page"
    pages_of = {}
    for i, p in zip(ids[is_sample].tolist(), sample_ptrs.tolist()):
        pages_of.setdefault(i, set()).add(p >> shift)
    spread = {i: sorted(p) for i, p in pages_of.items() if len(p) > 1}
    assert not spread, f"samples with allocations on several pages: {spread}"


# -- FloatField / IntField ----------------------------------------------------------------------
FLOATS = [0.0, -0.0, math.inf, -math.inf, math.nan, 1e308, 5e-324, -1e308, 1.5, np.float32(0.1)]


def test_float_edge_values(tmp_path):
    r = roundtrip(tmp_path, {"x": fastdata.FloatField()}, [(v,) for v in FLOATS])
    got = [r[i][0] for i in range(len(FLOATS))]
    for v, g in zip(FLOATS, got):
        assert type(g) is float
        assert float_bits(g) == float_bits(float(v)), (v, g)
    assert math.copysign(1.0, got[1]) == -1.0     # -0.0 keeps its sign
    assert math.isnan(got[4])
    assert got[6] == 5e-324 and got[6] > 0        # smallest subnormal survives


def test_int_edge_values(tmp_path):
    values = [-(2 ** 63), 2 ** 63 - 1, 0, -1, np.int64(7), np.uint8(255), 3.0]
    r = roundtrip(tmp_path, {"n": fastdata.IntField()}, [(v,) for v in values])
    got = [r.read(i, "n") for i in range(len(values))]
    assert got == [-(2 ** 63), 2 ** 63 - 1, 0, -1, 7, 255, 3]
    assert all(type(g) is int for g in got)


@pytest.mark.parametrize("bad", [2 ** 63, -(2 ** 63) - 1, 2 ** 64])
def test_int_out_of_range_fails(tmp_path, bad):
    path = tmp_path / "bad.beton"
    with pytest.raises(fastdata.WriteError) as info:
        write(path, {"n": fastdata.IntField()}, [(0,), (1,), (bad,)])
    msg = str(info.value)
    assert re.search(r"\bsample 2\b", msg) and "'n'" in msg and "int64" in msg, msg
    assert not path.exists()


# -- BytesField ---------------------------------------------------------------------------------
def test_bytes_edge_values(tmp_path):
    blob = np.random.default_rng(1).integers(0, 256, 1_500_000, dtype=np.uint8).tobytes()
    values = [b"", b"\x00", b"\xff", bytes(range(256)), blob, bytearray(b"abc"),
              memoryview(b"xyz"), np.frombuffer(b"\x01\x02\x03", dtype=np.uint8), b""]
    r = roundtrip(tmp_path, {"b": fastdata.BytesField()}, [(v,) for v in values])
    for i, v in enumerate(values):
        g = r.read(i, "b")
        assert type(g) is bytes
        assert g == bytes(v), i
    sizes = r.metadata["f0"]["size"].tolist()
    assert sizes == [len(bytes(v)) for v in values]
    check_alloc_invariants(r)


# -- JSONField ----------------------------------------------------------------------------------
JSON_VALUES = [
    {"text": "héllo wörld", "emoji": "🙂👍🏽🇫🇷", "cjk": "漢字かなカナ한국어"},
    {"nested": {"a": [1, 2, {"b": [None, True, False, 1.5, -3]}], "deep": [[[[[]]]]]}},
    {}, [], None, "a\u0000b", "\u0000", "", 0, -1.25, 2 ** 62, True,
    ["\ud800 lone surrogate", "tab\tnew\nline", "quote\"back\\slash", "\x7f\x01"],
    {"emoji key 🎉": "v", "": ""},
]


def test_json_edge_values(tmp_path):
    r = roundtrip(tmp_path, {"j": fastdata.JSONField()}, [(v,) for v in JSON_VALUES])
    for i, v in enumerate(JSON_VALUES):
        assert r.read(i, "j") == v, i
    # FFCV's layout: UTF-8 json.dumps(value) followed by exactly one NUL.
    for i, v in enumerate(JSON_VALUES):
        assert r.payload(i, "j").tobytes() == json.dumps(v).encode("utf-8") + b"\0"


def test_json_nul_in_string_survives_ffcv_separator(tmp_path):
    # FFCV cuts a payload at its first NUL: a NUL inside a string must not end the document.
    r = roundtrip(tmp_path, {"j": fastdata.JSONField()}, [({"s": "x\u0000y\u0000"},)])
    assert b"\0" not in r.payload(0, "j").tobytes()[:-1]
    assert r.read(0, "j") == {"s": "x\u0000y\u0000"}


# -- NDArrayField / TorchTensorField ------------------------------------------------------------
def _array_cases():
    rng = np.random.default_rng(2)
    return [
        ("f32_3x4", np.float32, (3, 4), [rng.standard_normal((3, 4)).astype(np.float32)
                                         for _ in range(3)]
         + [np.array([[np.inf, -np.inf, np.nan, -0.0]] * 3, dtype=np.float32)]),
        ("u8_1", np.uint8, (1,), [np.array([0], np.uint8), np.array([255], np.uint8)]),
        ("f64_256", np.float64, (256, 256), [rng.standard_normal((256, 256)) for _ in range(3)]),
        ("bool_7", np.bool_, (7,), [np.array([True, False, True, True, False, False, True]),
                                   np.zeros(7, bool)]),
        ("i16_2x3x5", np.int16, (2, 3, 5),
         [rng.integers(-32768, 32767, (2, 3, 5), dtype=np.int16)]),
        ("c64_2", np.complex64, (2,), [np.array([1 + 2j, -0.5j], np.complex64)]),
    ]


@pytest.mark.parametrize("case", _array_cases(), ids=lambda c: c[0])
def test_ndarray_roundtrip(tmp_path, case):
    _, dtype, shape, values = case
    r = roundtrip(tmp_path, {"a": fastdata.NDArrayField(dtype, shape)}, [(v,) for v in values])
    field = r.fields["a"]
    assert field.shape == shape and field.dtype == np.dtype(dtype)
    for i, v in enumerate(values):
        g = r.read(i, "a")
        assert g.shape == shape and g.dtype == np.dtype(dtype)
        assert g.tobytes() == np.ascontiguousarray(v, dtype=dtype).tobytes(), i
    check_alloc_invariants(r)


def test_ndarray_big_endian(tmp_path):
    """A big-endian field dtype is stored little-endian (FFCV's rule); big-endian input is
    converted, values are kept."""
    values = np.arange(12, dtype=">f4").reshape(3, 4) - 5.5
    fields = {"be": fastdata.NDArrayField(np.dtype(">f4"), (3, 4)),
              "le": fastdata.NDArrayField(np.float32, (3, 4)),
              "bi": fastdata.NDArrayField(np.dtype(">i8"), (2,))}
    ints = np.array([-(2 ** 62), 2 ** 40 + 3], dtype=">i8")
    r = roundtrip(tmp_path, fields, [(values, values, ints), (values * 2, values * 2, ints + 1)])
    for name in ("be", "le"):
        got = r.read(0, name)
        assert got.dtype == np.dtype("<f4")
        np.testing.assert_array_equal(got, values.astype("<f4"))
        np.testing.assert_array_equal(r.read(1, name), (values * 2).astype("<f4"))
        assert r.payload(0, name).tobytes() == values.astype("<f4").tobytes()
    got = r.read(1, "bi")
    assert got.dtype == np.dtype("<i8")
    assert got.tolist() == (ints + 1).tolist()
    descr = bytes(np.asarray(r.data[fmt.HEADER_SIZE + 17 + 264:
                                    fmt.HEADER_SIZE + 17 + 264 + 13]))
    assert descr == b'[["", "<f4"]]'


def test_ndarray_non_contiguous_and_castable_input(tmp_path):
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    view = base[:3, ::2][:, :3].T.T[:, :3]           # non-contiguous (3, 3)
    fields = {"a": fastdata.NDArrayField(np.float64, (3, 3))}
    r = roundtrip(tmp_path, fields, [(view,), ([[1, 2, 3]] * 3,)])
    np.testing.assert_array_equal(r.read(0, "a"), view.astype(np.float64))
    np.testing.assert_array_equal(r.read(1, "a"), np.array([[1, 2, 3]] * 3, np.float64))


def test_torch_tensor_field_from_numpy(tmp_path):
    values = [np.array([0, -1, 2 ** 63 - 1, -(2 ** 63), 5], dtype=np.int64),
              np.arange(5, dtype=np.int64)]
    r = roundtrip(tmp_path, {"t": fastdata.TorchTensorField("torch.int64", (5,))},
                  [(v,) for v in values])
    assert type(r.fields["t"]).__name__ == "TorchTensorField"
    for i, v in enumerate(values):
        g = r.read(i, "t")
        assert g.dtype == np.int64 and g.shape == (5,)
        np.testing.assert_array_equal(g, v)


def test_torch_tensor_field_from_torch(tmp_path):
    torch = pytest.importorskip("torch")
    values = [torch.tensor([1, -2, 3, -4, 5], dtype=torch.int64),
              torch.arange(10, dtype=torch.int64)[::2]]     # non-contiguous
    r = roundtrip(tmp_path, {"t": fastdata.TorchTensorField(torch.int64, (5,))},
                  [(v,) for v in values])
    for i, v in enumerate(values):
        np.testing.assert_array_equal(r.read(i, "t"), v.numpy())


# -- RGBImageField ------------------------------------------------------------------------------
IMAGE_SHAPES = [(1, 1), (1, 2000), (2000, 1), (37, 53), (53, 37), (3, 5), (101, 99)]


def _jpeg_bytes(rgb, quality):
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize("mode", ["raw", "jpg", "proportion", "smart"])
def test_image_modes_and_sizes(tmp_path, mode):
    images = [noise_image(h, w, seed=k) for k, (h, w) in enumerate(IMAGE_SHAPES)]
    kwargs = {"smart_threshold": 300} if mode == "smart" else {}
    field = fastdata.RGBImageField(write_mode=mode, jpeg_quality=90, **kwargs)
    r = roundtrip(tmp_path, {"img": field, "i": fastdata.IntField()},
                  [(im, k) for k, im in enumerate(images)])
    modes = stored_modes(r, "img")
    if mode == "raw":
        assert modes == ["raw"] * len(images)
    elif mode == "jpg":
        assert modes == ["jpg"] * len(images)
    elif mode == "smart":
        assert modes == ["jpg" if h * w * 3 > 300 else "raw" for h, w in IMAGE_SHAPES]
    col = image_column(r, "img")
    for k, (im, m) in enumerate(zip(images, modes)):
        h, w = im.shape[:2]
        assert (int(col[k]["width"]), int(col[k]["height"])) == (w, h)
        assert r.original_size(k, "img") == (w, h)
        got = r.read(k, "img")
        assert got.shape == (h, w, 3) and got.dtype == np.uint8
        if m == "raw":
            np.testing.assert_array_equal(got, im)
            assert r.payload(k, "img").tobytes() == im.tobytes()
        else:
            assert r.payload(k, "img").tobytes() == _jpeg_bytes(im, 90), k
        assert r.read(k, "i") == k
    check_alloc_invariants(r)


def test_smart_without_threshold_is_raw(tmp_path):
    images = [noise_image(40, 50, k) for k in range(3)]
    r = roundtrip(tmp_path, {"img": fastdata.RGBImageField("smart")}, [(im,) for im in images])
    assert stored_modes(r, "img") == ["raw"] * 3


def test_jpeg_quality_and_opencv_bytes(tmp_path):
    images = [smooth_image(123, 77, 0), smooth_image(64, 200, 1), smooth_image(300, 301, 2)]
    for q in (90, 75):
        r = roundtrip(tmp_path, {"img": fastdata.RGBImageField("jpg", jpeg_quality=q)},
                      [(im,) for im in images], name=f"q{q}.beton")
        for k, im in enumerate(images):
            payload = r.payload(k, "img").tobytes()
            assert payload == _jpeg_bytes(im, q)
            got = r.read(k, "img")
            if q == 90:
                diff = np.abs(got.astype(np.int16) - im.astype(np.int16)).mean()
                assert diff < 3, diff
            # our decoder and OpenCV's agree closely on the stored stream
            ref = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
            assert np.abs(got.astype(np.int16) - ref.astype(np.int16)).mean() < 1.5


def test_png_and_pil_inputs(tmp_path):
    from PIL import Image
    im = noise_image(20, 30, 5)
    buf = io.BytesIO()
    Image.fromarray(im).save(buf, format="PNG")
    png_path = tmp_path / "a.png"
    png_path.write_bytes(buf.getvalue())
    gray = np.random.default_rng(0).integers(0, 256, (9, 11), dtype=np.uint8)
    rgba = np.dstack([im, np.full(im.shape[:2], 7, np.uint8)])
    samples = [(buf.getvalue(),), (str(png_path),), (Image.fromarray(im),), (gray,), (rgba,)]
    r = roundtrip(tmp_path, {"img": fastdata.RGBImageField("raw")}, samples)
    for k in range(3):
        np.testing.assert_array_equal(r.read(k, "img"), im)
    np.testing.assert_array_equal(r.read(3, "img"), np.repeat(gray[:, :, None], 3, axis=2))
    np.testing.assert_array_equal(r.read(4, "img"), im)
    r2 = roundtrip(tmp_path, {"img": fastdata.RGBImageField("jpg")}, samples[:1], name="j.beton")
    assert r2.payload(0, "img").tobytes() == _jpeg_bytes(im, 90)


def ffcv_size(w, h, max_res):
    """FFCV's rule; a side never drops below 1 in fastdata (FFCV would produce 0)."""
    ratio = max_res / max(w, h)
    if ratio < 1:
        return max(1, int(ratio * w)), max(1, int(ratio * h))
    return w, h


@pytest.mark.parametrize("mode", ["raw", "jpg"])
def test_max_resolution_matches_ffcv(tmp_path, mode):
    max_res = 64
    shapes = [(200, 300), (300, 200), (64, 64), (65, 64), (10, 20), (97, 131), (1, 2000),
              (2000, 3), (129, 64), (63, 1000)]
    images = [smooth_image(h, w, k) if mode == "jpg" else noise_image(h, w, k)
              for k, (h, w) in enumerate(shapes)]
    field = fastdata.RGBImageField(mode, max_resolution=max_res, jpeg_quality=90)
    r = roundtrip(tmp_path, {"img": field}, [(im,) for im in images])
    col = image_column(r, "img")
    for k, im in enumerate(images):
        h, w = im.shape[:2]
        nw, nh = ffcv_size(w, h, max_res)
        assert (int(col[k]["width"]), int(col[k]["height"])) == (nw, nh), (w, h)
        assert r.original_size(k, "img") == (w, h)
        expected = im if (nw, nh) == (w, h) else \
            cv2.resize(im, (nw, nh), interpolation=cv2.INTER_AREA)
        got = r.read(k, "img")
        assert got.shape == (nh, nw, 3)
        if mode == "raw":
            np.testing.assert_array_equal(got, expected)
        else:
            assert r.payload(k, "img").tobytes() == _jpeg_bytes(expected, 90)
    side = r.side_table("img")
    assert side is not None
    assert [(int(a), int(b)) for a, b in zip(side["width"], side["height"])] == \
        [(im.shape[1], im.shape[0]) for im in images]


def test_proportion_seed_determinism_and_share(tmp_path):
    n = 400
    images = [noise_image(4 + k % 5, 5 + k % 3, k) for k in range(n)]

    def modes(seed, name, workers=2):
        field = fastdata.RGBImageField("proportion", compress_probability=0.3, seed=seed)
        path = write(tmp_path / name, {"img": field}, [(im,) for im in images],
                     num_workers=workers)
        return stored_modes(fastdata.Reader(path), "img"), path

    m1, p1 = modes(11, "a.beton")
    m2, p2 = modes(11, "b.beton", workers=1)
    m3, _ = modes(12, "c.beton")
    assert m1 == m2
    assert p1.read_bytes() == p2.read_bytes()
    assert m1 != m3
    share = m1.count("jpg") / n
    assert 0.22 <= share <= 0.38, share
    share3 = m3.count("jpg") / n
    assert 0.22 <= share3 <= 0.38, share3
    # raw records keep exact pixels, jpg records are OpenCV's encoding of them
    r = fastdata.Reader(p1)
    for k in range(0, n, 37):
        if m1[k] == "raw":
            np.testing.assert_array_equal(r.read(k, "img"), images[k])
        else:
            assert r.payload(k, "img").tobytes() == _jpeg_bytes(images[k], 90)


@pytest.mark.parametrize("p,expected", [(0.0, "raw"), (1.0, "jpg")])
def test_proportion_extremes(tmp_path, p, expected):
    images = [noise_image(8, 8, k) for k in range(30)]
    field = fastdata.RGBImageField("proportion", compress_probability=p)
    r = roundtrip(tmp_path, {"img": field}, [(im,) for im in images])
    assert stored_modes(r, "img") == [expected] * 30


# -- layout -------------------------------------------------------------------------------------
def _paged_samples(n=300):
    rng = np.random.default_rng(3)
    samples = []
    for i in range(n):
        blob = rng.integers(0, 256, 20_000 + int(rng.integers(0, 3000)), dtype=np.uint8).tobytes()
        samples.append((i, blob, {"i": i, "pad": "x" * int(rng.integers(0, 500))},
                        rng.standard_normal(16).astype(np.float32),
                        noise_image(3 + i % 7, 4 + i % 5, i)))
    return samples


PAGED_FIELDS = lambda: {"label": fastdata.IntField(), "blob": fastdata.BytesField(),  # noqa: E731
                        "meta": fastdata.JSONField(),
                        "arr": fastdata.NDArrayField(np.float32, (16,)),
                        "img": fastdata.RGBImageField("proportion", seed=4)}


def test_many_samples_span_pages(tmp_path):
    samples = _paged_samples()
    r = roundtrip(tmp_path, PAGED_FIELDS(), samples)
    assert len(r) == len(samples)
    is_sample = r.alloc_table["sample_id"] != fmt.NO_SAMPLE_ID
    pages = np.unique(r.alloc_table["ptr"][is_sample] >> np.uint64(21))
    assert len(pages) >= 3, pages
    check_alloc_invariants(r)
    # layout rules of FFCV: page-aligned data start, full pages, table at the end
    meta_end = fmt.metadata_start(5) + len(samples) * r.metadata_dtype.itemsize
    data_start = fmt.align_up(meta_end, PAGE)
    assert int(r.alloc_table["ptr"].min()) == data_start
    assert r.alloc_table_ptr % PAGE == 0
    assert (r.file_size - r.alloc_table_ptr) % 24 == 0
    assert not np.asarray(r.data[meta_end:data_start]).any()
    # every sample id appears, and each sample has one region per variable-size field
    ids, counts = np.unique(r.alloc_table["sample_id"][is_sample], return_counts=True)
    assert ids.tolist() == list(range(len(samples)))
    assert (counts == 4).all()
    for i in (0, 1, 150, 298, 299):
        label, blob, meta, arr, img = r[i]
        assert label == i and blob == samples[i][1] and meta == samples[i][2]
        np.testing.assert_array_equal(arr, samples[i][3])
        assert img.shape == samples[i][4].shape


def test_worker_count_gives_identical_files(tmp_path):
    samples = _paged_samples(120)
    a = write(tmp_path / "w1.beton", PAGED_FIELDS(), samples, num_workers=1)
    b = write(tmp_path / "w2.beton", PAGED_FIELDS(), samples, num_workers=2)
    assert a.read_bytes() == b.read_bytes()


# -- errors -------------------------------------------------------------------------------------
BAD_FIELDS = lambda: {"label": fastdata.IntField(), "arr": fastdata.NDArrayField(  # noqa: E731
    np.float32, (3, 4)), "meta": fastdata.JSONField(), "blob": fastdata.BytesField()}


def _good(i):
    return (i, np.zeros((3, 4), np.float32), {"i": i}, b"x")


@pytest.mark.parametrize("bad_index,bad_sample,field,fragment", [
    (3, (3, np.zeros((4, 3), np.float32), {}, b""), "arr", "shape"),
    (5, (5, np.zeros((3, 4), np.float32), {"o": object()}, b""), "meta", "JSON"),
    (4, ("4", np.zeros((3, 4), np.float32), {}, b""), "label", "integer"),
    (6, (6, np.zeros((3, 4), np.float32), {}, "text"), "blob", "bytes"),
    (2, (2, np.zeros((3, 4), np.complex64), {}, b""), "arr", "dtype"),
    (7, (7, np.zeros((3, 4), np.float32), {float("nan"): 1, (1, 2): 3}, b""), "meta", "JSON"),
])
def test_bad_value_names_sample_and_field(tmp_path, bad_index, bad_sample, field, fragment):
    samples = [_good(i) for i in range(10)]
    samples[bad_index] = bad_sample
    path = tmp_path / "bad.beton"
    with pytest.raises(fastdata.WriteError) as info:
        write(path, BAD_FIELDS(), samples)
    msg = str(info.value)
    assert re.search(rf"\bsample {bad_index}\b", msg), msg
    assert f"'{field}'" in msg, msg
    assert fragment in msg, msg
    assert not path.exists()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".partial")]


@pytest.mark.parametrize("bad", [(1, 2, 3), (1, 2, 3, 4, 5), 7, None])
def test_wrong_tuple_length(tmp_path, bad):
    samples = [_good(i) for i in range(10)]
    samples[8] = bad
    path = tmp_path / "bad.beton"
    with pytest.raises(fastdata.WriteError) as info:
        write(path, BAD_FIELDS(), samples)
    msg = str(info.value)
    assert re.search(r"\bsample 8\b", msg), msg
    assert "label, arr, meta, blob" in msg, msg
    assert not path.exists()


def test_bad_value_in_image_field(tmp_path):
    samples = [(noise_image(4, 4),), (np.zeros((4, 4, 3), np.float32),)]
    with pytest.raises(fastdata.WriteError) as info:
        write(tmp_path / "x.beton", {"picture": fastdata.RGBImageField()}, samples)
    assert re.search(r"\bsample 1\b", str(info.value)) and "'picture'" in str(info.value)
    samples = [(b"not an image at all",)]
    with pytest.raises(fastdata.WriteError) as info:
        write(tmp_path / "y.beton", {"picture": fastdata.RGBImageField()}, samples)
    assert re.search(r"\bsample 0\b", str(info.value)) and "'picture'" in str(info.value)


def test_value_larger_than_page_fails(tmp_path):
    with pytest.raises(fastdata.WriteError) as info:
        write(tmp_path / "big.beton", {"b": fastdata.BytesField()}, [(b"a",), (bytes(PAGE + 1),)])
    assert re.search(r"\bsample 1\b", str(info.value)) and "page size" in str(info.value)


@pytest.mark.parametrize("name", ["a" * 17, "naïve", "名前", "", "a\0b"])
def test_bad_field_names_rejected(tmp_path, name):
    with pytest.raises(fastdata.FormatError):
        fastdata.DatasetWriter(tmp_path / "n.beton", {name: fastdata.IntField()},
                               page_size=PAGE, num_workers=1, progress=False)


def test_sixteen_char_name_roundtrips(tmp_path):
    name = "abcdefghijklmnop"
    r = roundtrip(tmp_path, {name: fastdata.IntField(), "b": fastdata.IntField()},
                  [(1, 2), (3, 4)])
    assert r.field_names == [name, "b"]
    raw_name = bytes(np.asarray(r.data[fmt.HEADER_SIZE + 1:fmt.HEADER_SIZE + 17]))
    assert raw_name == name.encode()            # no terminator
    assert r[1] == (3, 4)


# -- reader indexing ----------------------------------------------------------------------------
def test_reader_indexing(tmp_path):
    samples = [(i, f"v{i}".encode()) for i in range(5)]
    r = roundtrip(tmp_path, {"i": fastdata.IntField(), "b": fastdata.BytesField()}, samples)
    assert len(r) == 5
    assert r[-1] == (4, b"v4")
    assert r[-5] == (0, b"v0")
    assert r[np.int64(2)] == (2, b"v2")
    assert r.read(-2, "b") == b"v3"
    for bad in (5, -6, 10 ** 20, -(10 ** 20)):
        with pytest.raises(IndexError):
            r[bad]
        with pytest.raises(IndexError):
            r.read(bad, "i")
    with r:
        pass
    assert r.data is None


def test_only_metadata_fields_have_no_pages(tmp_path):
    r = roundtrip(tmp_path, {"i": fastdata.IntField(), "f": fastdata.FloatField()},
                  [(i, i / 2) for i in range(7)])
    meta_end = fmt.metadata_start(2) + 7 * r.metadata_dtype.itemsize
    assert r.alloc_table_ptr == meta_end == r.file_size
    assert len(r.alloc_table) == 0
    assert [r[i] for i in range(7)] == [(i, i / 2) for i in range(7)]
