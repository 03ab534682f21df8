"""One rule for corrupt JPEG data on every path: the loader's region decoder (libjpeg-turbo 3),
its simplejpeg fallback and Reader.read all raise SampleError (index and field) for a record
cut short or data that libjpeg decodes only with a warning; accept_jpeg_warnings=True decodes
what libjpeg can, as FFCV does."""
from __future__ import annotations

import numpy as np
import pytest

import fastdata
from fastdata.pixels import libturbojpeg
from fastdata.ops import RandomResizedCrop

from test_resample import photo

SIZE = (120, 160)          # stored height, width
NUM = 6


def _marker(data: bytes, code: int) -> int:
    return data.index(bytes([0xFF, code]))


def _scan_start(data: bytes) -> int:
    sos = _marker(data, 0xDA)
    return sos + 2 + int.from_bytes(data[sos + 2:sos + 4], "big")


def replace_entropy_bytes(data: bytes) -> bytes:
    """150 bytes in the middle of the entropy-coded data replaced (no 0xFF: no new marker).
    libjpeg warns about most such damage (here: extraneous bytes before the end marker); what
    it decodes without any warning cannot be told from intact data (JPEG has no checksum)."""
    out = bytearray(data)
    start = _scan_start(data)
    mid = (start + len(data) - 2) // 2
    out[mid:mid + 150] = bytes(np.random.default_rng(0).integers(0, 255, 150, dtype=np.uint8))
    return bytes(out)


def early_eoi(data: bytes) -> bytes:
    """An end-of-image marker a third of the way into the entropy-coded data."""
    out = bytearray(data)
    start = _scan_start(data)
    at = start + (len(data) - 2 - start) // 3
    out[at:at + 2] = b"\xff\xd9"
    return bytes(out)


def sof0_to_sof9(data: bytes) -> bytes:
    """Baseline Huffman frame relabelled as arithmetic-coded."""
    out = bytearray(data)
    out[_marker(data, 0xC0) + 1] = 0xC9
    return bytes(out)


def zeroed_dqt(data: bytes) -> bytes:
    """The first quantisation table's 64 values set to 0."""
    out = bytearray(data)
    at = _marker(data, 0xDB) + 5
    out[at:at + 64] = bytes(64)
    return bytes(out)


CORRUPTIONS = [replace_entropy_bytes, early_eoi, sof0_to_sof9, zeroed_dqt]


def _write(path, corrupt=None, at=2, shrink=0):
    """NUM JPEG samples; sample ``at``'s payload corrupted in place, or its record shrunk by
    ``shrink`` bytes (the file's allocation table says it is shorter)."""
    rng = np.random.default_rng(1)
    images = [photo(rng, *SIZE) for _ in range(NUM)]
    fastdata.DatasetWriter(path, {"image": fastdata.RGBImageField("jpg", jpeg_quality=90),
                                  "label": fastdata.IntField()},
                           num_workers=1, progress=False).from_indexed_dataset(
        [(img, k) for k, img in enumerate(images)])
    with fastdata.Reader(path) as r:
        ptr, size = int(r.payload_ptrs("image")[at]), int(r.payload_sizes("image")[at])
        entries = np.flatnonzero(r.alloc_table["ptr"] == ptr)
        entry = r.alloc_table_ptr + int(entries[0]) * r.alloc_table.dtype.itemsize
        size_offset = r.alloc_table.dtype.fields["size"][1]
    data = bytearray(path.read_bytes())
    if corrupt is not None:
        payload = corrupt(bytes(data[ptr:ptr + size]))
        assert len(payload) == size
        data[ptr:ptr + size] = payload
    if shrink:
        field = entry + size_offset
        data[field:field + 8] = int(size - shrink).to_bytes(8, "little")
    path.write_bytes(bytes(data))
    return path


def _load(path, **decoder_options):
    loader = fastdata.Loader(path, batch_size=NUM, num_workers=1, order="sequential",
                             drop_last=False, pipelines={
                                 "image": [RandomResizedCrop(64, scale=(0.9, 1.0),
                                                             **decoder_options)],
                                 "label": None})
    try:
        return [batch[0].copy() for batch in loader]     # no ToTensor: numpy
    finally:
        loader.close()


DECODERS = [pytest.param(True, id="libturbojpeg"), pytest.param(False, id="simplejpeg")]


def _needs(use_turbo):
    if use_turbo and not libturbojpeg.AVAILABLE:
        pytest.fail("libturbojpeg 3 (the turbojpeg wheel) is not installed")


@pytest.mark.parametrize("use_turbo", DECODERS)
@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__)
def test_corrupt_jpeg_data_is_a_sample_error(tmp_path, corrupt, use_turbo):
    _needs(use_turbo)
    path = _write(tmp_path / "c.beton", corrupt)
    with pytest.raises(fastdata.SampleError) as info:
        _load(path, use_libturbojpeg=use_turbo)
    assert info.value.index == 2 and info.value.field == "image", info.value
    with fastdata.Reader(path) as r:
        with pytest.raises(fastdata.SampleError) as info:
            r.read(2, "image")
        assert info.value.index == 2 and "JPEG" in str(info.value)
        r.read(1, "image")


@pytest.mark.parametrize("use_turbo", DECODERS)
def test_shrunk_record_is_a_sample_error(tmp_path, use_turbo):
    """The region decoder stops at the crop's last row, so a record cut short is caught by its
    missing end-of-image marker, not by the decode."""
    _needs(use_turbo)
    path = _write(tmp_path / "s.beton", shrink=300)
    with pytest.raises(fastdata.SampleError, match="end-of-image marker") as info:
        _load(path, use_libturbojpeg=use_turbo)
    assert info.value.index == 2
    with fastdata.Reader(path) as r, pytest.raises(fastdata.SampleError, match="end-of-image"):
        r.read(2, "image")


@pytest.mark.parametrize("use_turbo", DECODERS)
def test_accept_jpeg_warnings_decodes_what_libjpeg_can(tmp_path, use_turbo):
    """FFCV's rule, when asked for: data that decodes with a warning gives pixels, the intact
    samples are unchanged."""
    _needs(use_turbo)
    clean = _load(_write(tmp_path / "ok.beton"), use_libturbojpeg=use_turbo)[0]
    for corrupt in (replace_entropy_bytes, early_eoi):
        path = _write(tmp_path / f"{corrupt.__name__}.beton", corrupt)
        images = _load(path, use_libturbojpeg=use_turbo, accept_jpeg_warnings=True)[0]
        assert images.shape == clean.shape
        keep = np.arange(NUM) != 2
        assert np.array_equal(images[keep], clean[keep])
        with fastdata.Reader(path, accept_jpeg_warnings=True) as r:
            assert r.read(2, "image").shape == (*SIZE, 3)
    shrunk = _write(tmp_path / "shrunk.beton", shrink=300)
    assert _load(shrunk, use_libturbojpeg=use_turbo, accept_jpeg_warnings=True)[0].shape == \
        clean.shape


def test_intact_files_decode_the_same_either_way(tmp_path):
    path = _write(tmp_path / "ok.beton")
    assert np.array_equal(_load(path)[0], _load(path, accept_jpeg_warnings=True)[0])
