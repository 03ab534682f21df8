"""fastdata reads files written by FFCV 1.0.2 exactly, and lays out its own files the same way.

The fixtures are committed in tests/fixtures/ (tests/fixtures/README.md says how FFCV wrote
them), so these tests run in every checkout.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

import fastdata
from fastdata import format as fmt
from fastdata.pixels.resize import size_within


FIXTURES = Path(__file__).resolve().parent / "fixtures"

ALL_FIELDS_TYPES = ["FloatField", "IntField", "RGBImageField", "BytesField", "NDArrayField",
                    "JSONField", "TorchTensorField"]
ALL_FIELDS_IDS = [0, 1, 2, 3, 4, 5, 6]


def _fixture(name: str):
    """(path, expected values) of a committed FFCV-written file and its JSON sidecar."""
    path = FIXTURES / name
    with open(FIXTURES / f"{name}.json", encoding="utf-8") as f:
        return path, json.load(f)


@pytest.fixture(scope="module")
def all_fields():
    return _fixture("ffcv_all_fields.beton")


@pytest.fixture(scope="module")
def proportion():
    return _fixture("ffcv_images_proportion.beton")


def _bits(x: float) -> bytes:
    return struct.pack("<d", x)


# -- reading FFCV's files -----------------------------------------------------------------------
def test_all_fields_structure(all_fields):
    path, expected = all_fields
    with fastdata.Reader(path) as r:
        assert r.field_names == expected["fields"]
        assert [type(f).__name__ for f in r.fields.values()] == ALL_FIELDS_TYPES
        assert r.page_size == expected["page_size"] == 1 << 21
        assert len(r) == r.num_samples == len(expected["samples"])
        arr, tens = r.fields["arr"], r.fields["tens"]
        assert arr.dtype == np.dtype("<f4") and arr.shape == (3, 4)
        assert tens.dtype == np.dtype("<i8") and tens.shape == (5,)
        assert r.side_table("image") is None      # FFCV stores no original sizes


def test_all_fields_values(all_fields):
    path, expected = all_fields
    with fastdata.Reader(path) as r:
        for i, s in enumerate(expected["samples"]):
            f, label, image, blob, arr, meta, tens = r[i]
            assert type(f) is float and _bits(f) == _bits(float(s["float"])), i
            assert type(label) is int and label == s["int"], i
            want = np.array(s["image_raw_rgb"], dtype=np.uint8)
            assert want.ndim == 3 and want.shape[2] == 3
            assert image.dtype == np.uint8 and image.shape == want.shape, i
            np.testing.assert_array_equal(image, want)
            assert blob == bytes.fromhex(s["bytes_hex"]), i
            want_arr = np.array(s["ndarray"], dtype=np.float32)
            assert arr.dtype == np.float32 and arr.shape == (3, 4)
            assert arr.tobytes() == want_arr.tobytes(), i
            assert meta == s["json"], i
            assert tens.dtype == np.int64 and tens.tolist() == s["tensor"], i
            # every image in this file is raw; with no side table the original size is stored one
            col = r.metadata["f2"]
            assert int(col[i]["mode"]) == 1
            assert (int(col[i]["width"]), int(col[i]["height"])) == (want.shape[1], want.shape[0])
            assert r.original_size(i, "image") == (want.shape[1], want.shape[0])
        assert r[-1][1] == expected["samples"][-1]["int"]
        with pytest.raises(IndexError):
            r[len(expected["samples"])]


def test_proportion_file(proportion):
    path, expected = proportion
    samples = expected["samples"]
    with fastdata.Reader(path) as r:
        assert r.field_names == expected["fields"] == ["image", "label"]
        assert [type(f).__name__ for f in r.fields.values()] == ["RGBImageField", "IntField"]
        assert r.page_size == expected["page_size"]
        assert len(r) == len(samples)
        col = r.metadata["f0"]
        modes = []
        for i, s in enumerate(samples):
            mode = "jpg" if int(col[i]["mode"]) == 0 else "raw"
            modes.append(mode)
            assert mode == s["mode"], i
            h, w = s["stored_hw"]
            assert (int(col[i]["height"]), int(col[i]["width"])) == (h, w), i
            image, label = r[i]
            assert label == s["label"], i
            assert image.shape == (h, w, 3) and image.dtype == np.uint8, i
            assert r.original_size(i, "image") == (w, h)
            if mode == "raw":
                assert r.payload(i, "image").size == h * w * 3
            else:
                assert r.payload(i, "image")[:2].tobytes() == b"\xff\xd8"
        assert "jpg" in modes and "raw" in modes


def test_proportion_file_sizes_follow_our_resize_rule(proportion):
    """FFCV's own output pins the max_resolution rule that fastdata's writer implements."""
    _, expected = proportion
    resized = 0
    for s in expected["samples"]:
        sh, sw = s["source_hw"]
        h, w = s["stored_hw"]
        assert size_within(sw, sh, 256) == (w, h), s
        resized += (h, w) != (sh, sw)
    assert resized > 0


# -- byte layout of a file fastdata writes, against FFCV's ---------------------------------------
def _fastdata_fields():
    return {"f": fastdata.FloatField(), "label": fastdata.IntField(),
            "image": fastdata.RGBImageField(write_mode="raw"), "blob": fastdata.BytesField(),
            "arr": fastdata.NDArrayField(np.float32, (3, 4)), "meta": fastdata.JSONField(),
            "tens": fastdata.TorchTensorField("torch.int64", (5,))}


def _samples_from_json(expected):
    out = []
    for s in expected["samples"]:
        out.append((float(s["float"]), int(s["int"]), np.array(s["image_raw_rgb"], np.uint8),
                    bytes.fromhex(s["bytes_hex"]), np.array(s["ndarray"], np.float32), s["json"],
                    np.array(s["tensor"], np.int64)))
    return out


def _header(raw: bytes) -> dict:
    version, num_fields, page_size, num_samples, alloc_ptr = struct.unpack_from("<HHIQQ", raw, 0)
    return dict(version=version, num_fields=num_fields, page_size=page_size,
                num_samples=num_samples, alloc_table_ptr=alloc_ptr)


def _descriptors(raw: bytes, n: int) -> list[tuple[int, bytes, bytes]]:
    out = []
    for k in range(n):
        d = raw[24 + 1041 * k:24 + 1041 * (k + 1)]
        out.append((d[0], d[1:17], d[17:]))
    return out


# Record layout worked out by hand from numpy's align=True rules (formats.md A.4):
# f8 @0, i8 @8, packed 13-byte image @16, packed 16-byte bytes @29, u8 @48 (aligned), packed
# 16-byte JSON @56, u8 @72; itemsize 80.
EXPECTED_OFFSETS = [0, 8, 16, 29, 48, 56, 72]
EXPECTED_ITEMSIZE = 80


def _raw_records(raw: bytes, num_fields: int, num_samples: int, itemsize: int):
    """Decode each metadata record from raw bytes with struct, independent of fastdata's dtypes."""
    start = 24 + 1041 * num_fields
    out = []
    for i in range(num_samples):
        base = start + i * itemsize
        f, = struct.unpack_from("<d", raw, base + 0)
        label, = struct.unpack_from("<q", raw, base + 8)
        mode, width, height, img_ptr = struct.unpack_from("<BHHQ", raw, base + 16)
        blob_ptr, blob_size = struct.unpack_from("<QQ", raw, base + 29)
        arr_ptr, = struct.unpack_from("<Q", raw, base + 48)
        json_ptr, json_size = struct.unpack_from("<QQ", raw, base + 56)
        tens_ptr, = struct.unpack_from("<Q", raw, base + 72)
        out.append(dict(f=f, label=label, mode=mode, width=width, height=height, img_ptr=img_ptr,
                        blob_ptr=blob_ptr, blob_size=blob_size, arr_ptr=arr_ptr,
                        json_ptr=json_ptr, json_size=json_size, tens_ptr=tens_ptr))
    return out


def test_fixture_layout_decoded_by_hand(all_fields):
    """The hand-computed record layout really is FFCV's (checked on FFCV's bytes)."""
    path, expected = all_fields
    raw = path.read_bytes()
    n = len(expected["samples"])
    for i, rec in enumerate(_raw_records(raw, 7, n, EXPECTED_ITEMSIZE)):
        s = expected["samples"][i]
        assert _bits(rec["f"]) == _bits(float(s["float"]))
        assert rec["label"] == s["int"]
        img = np.array(s["image_raw_rgb"], np.uint8)
        assert (rec["mode"], rec["height"], rec["width"]) == (1, img.shape[0], img.shape[1])
        assert raw[rec["img_ptr"]:rec["img_ptr"] + img.nbytes] == img.tobytes()
        blob = bytes.fromhex(s["bytes_hex"])
        assert rec["blob_size"] == len(blob)
        assert raw[rec["blob_ptr"]:rec["blob_ptr"] + len(blob)] == blob
        assert raw[rec["arr_ptr"]:rec["arr_ptr"] + 48] == \
            np.array(s["ndarray"], np.float32).tobytes()
        assert raw[rec["tens_ptr"]:rec["tens_ptr"] + 40] == np.array(s["tensor"], "<i8").tobytes()
        doc = json.dumps(s["json"]).encode() + b"\0"
        assert rec["json_size"] == len(doc)
        assert raw[rec["json_ptr"]:rec["json_ptr"] + len(doc)] == doc


def test_written_layout_matches_fixture(all_fields, tmp_path):
    path, expected = all_fields
    ffcv_raw = path.read_bytes()
    samples = _samples_from_json(expected)
    ours_path = tmp_path / "ours.beton"
    fastdata.DatasetWriter(ours_path, _fastdata_fields(), page_size=1 << 21, num_workers=2,
                           progress=False).from_indexed_dataset(samples)
    ours_raw = ours_path.read_bytes()
    n = len(samples)

    # header
    h_ffcv, h_ours = _header(ffcv_raw), _header(ours_raw)
    for key in ("version", "num_fields", "page_size", "num_samples"):
        assert h_ours[key] == h_ffcv[key], key
    assert h_ours["version"] == 2 and h_ours["num_fields"] == 7

    # descriptors: type ids, names, arguments (except the image field's, which FFCV leaves zero
    # and fastdata uses for its settings)
    d_ffcv, d_ours = _descriptors(ffcv_raw, 7), _descriptors(ours_raw, 7)
    for k, ((t1, n1, a1), (t2, n2, a2)) in enumerate(zip(d_ffcv, d_ours)):
        assert t1 == t2 == ALL_FIELDS_IDS[k], k
        assert n1 == n2, k
        if ALL_FIELDS_TYPES[k] != "RGBImageField":
            assert a1 == a2, (k, a1.rstrip(b"\0")[-40:], a2.rstrip(b"\0")[-40:])
    assert d_ffcv[2][2] == bytes(1024)

    # metadata record: itemsize and offsets, seen through both readers' dtypes
    with fastdata.Reader(path) as r_ffcv, fastdata.Reader(ours_path) as r_ours:
        for r in (r_ffcv, r_ours):
            assert r.metadata_dtype.itemsize == EXPECTED_ITEMSIZE
            assert [r.metadata_dtype.fields[f"f{k}"][1] for k in range(7)] == EXPECTED_OFFSETS
        for k in range(7):
            assert r_ours.metadata_dtype.fields[f"f{k}"][0] == \
                r_ffcv.metadata_dtype.fields[f"f{k}"][0]

    # the records of our file, decoded by hand, carry the same values and sizes as FFCV's, and
    # every payload's bytes are identical
    recs_ffcv = _raw_records(ffcv_raw, 7, n, EXPECTED_ITEMSIZE)
    recs_ours = _raw_records(ours_raw, 7, n, EXPECTED_ITEMSIZE)
    for i, (a, b) in enumerate(zip(recs_ffcv, recs_ours)):
        assert _bits(a["f"]) == _bits(b["f"]), i
        for key in ("label", "mode", "width", "height", "blob_size", "json_size"):
            assert a[key] == b[key], (i, key)
        payloads = [("img_ptr", a["width"] * a["height"] * 3), ("blob_ptr", a["blob_size"]),
                    ("arr_ptr", 48), ("json_ptr", a["json_size"]), ("tens_ptr", 40)]
        for key, size in payloads:
            assert ffcv_raw[a[key]:a[key] + size] == ours_raw[b[key]:b[key] + size], (i, key)

    # data_start alignment: align_up(metadata end, page_size), zero padding up to it, the first
    # allocation at data_start, full pages, allocation table to EOF
    for raw, hdr in ((ffcv_raw, h_ffcv), (ours_raw, h_ours)):
        page = hdr["page_size"]
        meta_end = 24 + 1041 * 7 + n * EXPECTED_ITEMSIZE
        data_start = fmt.align_up(meta_end, page)
        assert data_start == page                  # 8k of metadata rounds up to one page
        assert raw[meta_end:data_start] == bytes(data_start - meta_end)
        table = np.frombuffer(raw[hdr["alloc_table_ptr"]:], dtype=fmt.ALLOC_ENTRY_DTYPE)
        assert (len(raw) - hdr["alloc_table_ptr"]) % 24 == 0
        assert hdr["alloc_table_ptr"] % page == 0 and hdr["alloc_table_ptr"] > data_start
        is_sample = table["sample_id"] != fmt.NO_SAMPLE_ID
        assert int(table["ptr"][is_sample].min()) == data_start
        # every sample has its five regions, all on one page
        assert sorted(np.unique(table["sample_id"][is_sample]).tolist()) == list(range(n))
        for i in range(n):
            ptrs = table["ptr"][table["sample_id"] == i]
            assert len(ptrs) == 5
            assert len(set((ptrs // page).tolist())) == 1
