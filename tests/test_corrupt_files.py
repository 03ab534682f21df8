"""No file content may crash the process: corrupt and truncated files give clear errors.

A valid small file is mutated a few hundred ways (seeded, so every run tries the same files):
truncations, byte flips where the offsets live (header, descriptors, metadata, allocation
table), 8-byte words overwritten with huge values, and flips inside JPEG payloads.  A subprocess
opens each mutated file and reads every field of every sample, so a segfault or an abort shows
up as a return code instead of killing the test run.  Every failure must be one of the clear,
expected errors: FormatError, SampleError, IndexError or ValueError.
"""
from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
import textwrap
from collections import Counter, defaultdict

import numpy as np
import pytest

import fastdata
from fastdata import format as fmt

PAGE = 1 << 21
NUM_SAMPLES = 30
SEED = 20240611
EXPECTED = ("FormatError", "SampleError", "IndexError", "ValueError")


def _image(h, w, k):
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 128 + 100 * np.sin(x / 7.0 + k)
    g = 128 + 100 * np.cos(y / 5.0 - k)
    b = (x * 3 + y * 5 + 17 * k) % 256
    return np.clip(np.stack([r, g, b], 2), 0, 255).astype(np.uint8)


def _fields():
    return {"label": fastdata.IntField(), "raw": fastdata.RGBImageField("raw"),
            "jpg": fastdata.RGBImageField("jpg", jpeg_quality=85),
            "blob": fastdata.BytesField(), "meta": fastdata.JSONField(),
            "arr": fastdata.NDArrayField(np.float32, (2, 3)), "score": fastdata.FloatField()}


def _samples():
    rng = np.random.default_rng(7)
    out = []
    for k in range(NUM_SAMPLES):
        h, w = 8 + 5 * (k % 7), 9 + 3 * (k % 11)
        out.append((k, _image(h, w, k), _image(w + 4, h + 2, k + 100),
                    rng.integers(0, 256, int(rng.integers(0, 200)), dtype=np.uint8).tobytes(),
                    {"k": k, "name": f"s{k}", "tags": ["a"] * (k % 3)},
                    rng.standard_normal((2, 3)).astype(np.float32), k / 3))
    return out


@pytest.fixture(scope="module")
def valid_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corrupt") / "valid.beton"
    fastdata.DatasetWriter(path, _fields(), page_size=PAGE, num_workers=2,
                           progress=False).from_indexed_dataset(_samples())
    return path


# -- the mutations ------------------------------------------------------------------------------
class Layout:
    """Where things are in the valid file."""

    def __init__(self, path):
        with fastdata.Reader(path) as r:
            self.size = r.file_size
            self.num_fields = len(r.field_names)
            self.names = list(r.field_names)
            self.meta_start = fmt.metadata_start(self.num_fields)
            self.itemsize = r.metadata_dtype.itemsize
            self.meta_end = self.meta_start + r.num_samples * self.itemsize
            self.data_start = fmt.align_up(self.meta_end, r.page_size)
            self.alloc_ptr = r.alloc_table_ptr
            self.num_entries = len(r.alloc_table)
            self.offsets = {name: r.metadata_dtype.fields[f"f{k}"][1]
                            for k, name in enumerate(self.names)}
            k = self.names.index("jpg")
            col = r.metadata[f"f{k}"]
            self.jpegs = [(int(p), int(s)) for p, s in
                          zip(col["data_ptr"], r._sizes["jpg"])]
            raw = bytes(np.asarray(r.data))
            # absolute offset of each JPEG's SOF0 height field (2 bytes), then width (2 bytes)
            self.sof_dims = [raw.index(b"\xff\xc0", p, p + s) + 5 for p, s in self.jpegs]
            is_sample = r.alloc_table["sample_id"] != fmt.NO_SAMPLE_ID
            ends = r.alloc_table["ptr"][is_sample] + r.alloc_table["size"][is_sample]
            self.used_data_end = int(ends.max())

    def desc(self, name):
        return fmt.HEADER_SIZE + fmt.FIELD_DESC_SIZE * self.names.index(name)

    def record(self, i, name):
        return self.meta_start + i * self.itemsize + self.offsets[name]


def _mutations(lay: Layout) -> list[dict]:
    """Deterministic list of mutations: {'desc', 'truncate'} or {'desc', 'patches'}."""
    rng = np.random.default_rng(SEED)
    muts: list[dict] = [{"desc": "unmodified", "patches": []}]

    def trunc(n, why):
        muts.append({"desc": f"truncate to {n} ({why})", "truncate": int(n)})

    def patch(why, *pairs):
        muts.append({"desc": why, "patches": [[int(o), bytes(b).hex()] for o, b in pairs]})

    def ri(lo, hi):
        return int(rng.integers(lo, hi))

    # truncations
    for n, why in [(0, "empty"), (1, "1 byte"), (10, "10 bytes"), (23, "header - 1"),
                   (24, "header only"), (25, "header + 1"), (24 + 17, "descriptor name"),
                   (24 + 500, "inside descriptor 0"), (lay.meta_start - 1, "last descriptor"),
                   (lay.meta_start, "no metadata"), (lay.meta_start + 5, "first record"),
                   (lay.meta_end - 1, "metadata - 1"), (lay.meta_end, "metadata end"),
                   (lay.meta_end + 1000, "padding"), (lay.data_start, "data start"),
                   (lay.data_start + 1, "first page + 1"), (lay.used_data_end - 1, "last value"),
                   (lay.alloc_ptr - 1, "table - 1"), (lay.alloc_ptr, "no table"),
                   (lay.alloc_ptr + 1, "table + 1"), (lay.alloc_ptr + 12, "half an entry"),
                   (lay.alloc_ptr + 24, "one entry"), (lay.size - 24, "table - 1 entry"),
                   (lay.size - 1, "size - 1")]:
        trunc(n, why)
    for _ in range(8):
        trunc(ri(lay.meta_start, lay.meta_end), "random in metadata")
    for _ in range(8):
        trunc(ri(lay.data_start, lay.alloc_ptr), "random in pages")
    for _ in range(8):
        trunc(ri(lay.alloc_ptr, lay.size), "random in table")
    for _ in range(6):
        trunc(ri(24, lay.meta_start), "random in descriptors")

    # byte flips, concentrated where the offsets live
    regions = [("header", 0, 24, 0.25), ("descriptors", 24, lay.meta_start, 0.15),
               ("metadata", lay.meta_start, lay.meta_end, 0.30),
               ("alloc table", lay.alloc_ptr, lay.size, 0.25),
               ("pages", lay.data_start, lay.alloc_ptr, 0.05)]
    weights = np.array([w for *_, w in regions])
    for _ in range(160):
        name, lo, hi, _w = regions[int(rng.choice(len(regions), p=weights / weights.sum()))]
        count = ri(1, 5)
        pairs = []
        for _ in range(count):
            off = ri(lo, hi)
            pairs.append((off, [ri(1, 256)]))      # XOR value; applied in the runner
        muts.append({"desc": f"xor {count} byte(s) in {name}", "xor": [[o, b[0]] for o, b
                                                                        in pairs]})
    # the descriptor bytes that matter most: type ids and image/array arguments
    for name in lay.names:
        d = lay.desc(name)
        patch(f"type id of {name!r} = 7", (d, [7]))
        patch(f"type id of {name!r} = 255", (d, [255]))
        patch(f"name of {name!r} non-ASCII", (d + 1, [0xC3]))
    patch("duplicate field name", (lay.desc("blob") + 1, b"label\0\0\0\0\0\0\0\0\0\0\0"))

    # 8-byte words overwritten with huge values
    big = [2 ** 63, 2 ** 64 - 1, lay.size, lay.size + 1, 2 ** 63 - 1, 2 ** 32, 0, 1,
           lay.data_start - 1, lay.alloc_ptr - 1, lay.alloc_ptr]

    def word(off, value, why, width=8):
        patch(f"{why} = {value}", (off, struct.pack("<Q", value)[:width]))

    for v in big:
        word(8, v, "header num_samples")
        word(16, v, "header alloc_table_ptr")
    for v in (0, 1, 3, 1 << 20, 1 << 22, 1 << 31, 2 ** 32 - 1, 12345):
        word(4, v, "header page_size", width=4)
    for v in (0, 1, 3, 6, 8, 100, 65535):
        word(2, v, "header num_fields", width=2)
    for v in (0, 1, 3, 65535):
        word(0, v, "header version", width=2)
    for image in ("raw", "jpg"):
        args = lay.desc(image) + 17
        for v in big:
            word(args + 32, v, f"{image} side table ptr")
            word(args + 40, v, f"{image} side table count")
        for field_off, v in [(5, 200), (5, 255), (6, 0), (6, 255), (8, 2 ** 32 - 1)]:
            patch(f"{image} args byte {field_off} = {v}",
                  (args + field_off, struct.pack("<I", v)[:1 if field_off < 8 else 4]))
    args = lay.desc("arr") + 17
    for v in (0, 1, 7, 2 ** 31, 2 ** 63, 2 ** 64 - 1, 10 ** 12):
        word(args, v, "arr shape[0]")
        word(args + 8, v, "arr shape[1]")
        word(args + 256, v, "arr dtype length")
    patch("arr dtype descr garbage", (args + 264, b'[["", "|O"]]'))
    patch("arr dtype descr not json", (args + 264, b'[[",'))
    patch("arr dtype descr struct", (args + 264, b'[["a", "<f4"]]'))
    patch("arr shape all zero", (args, bytes(256)))
    # metadata words: every pointer and size, random samples and values
    targets = [("raw", 5, 8), ("raw", 1, 2), ("raw", 3, 2), ("raw", 0, 1),
               ("jpg", 5, 8), ("jpg", 1, 2), ("jpg", 3, 2), ("jpg", 0, 1),
               ("blob", 0, 8), ("blob", 8, 8), ("meta", 0, 8), ("meta", 8, 8), ("arr", 0, 8)]
    for t in range(len(targets) * 7):
        name, rel, width = targets[t % len(targets)]
        i = ri(0, NUM_SAMPLES)
        v = big[ri(0, len(big))] if t % 3 else ri(0, lay.size)
        word(lay.record(i, name) + rel, v & ((1 << (8 * width)) - 1),
             f"sample {i} {name} metadata +{rel}", width=width)
    # allocation table words
    for t in range(66):
        e = ri(0, lay.num_entries)
        column = t % 3
        v = big[ri(0, len(big))] if t % 2 else ri(0, lay.size)
        word(lay.alloc_ptr + 24 * e + 8 * column, v,
             f"alloc entry {e} {('sample_id', 'ptr', 'size')[column]}")

    # flips inside JPEG payloads: headers (first 200 bytes: SOF dimensions, tables) and data
    for t in range(70):
        i = ri(0, NUM_SAMPLES)
        ptr, size = lay.jpegs[i]
        hi = min(size, 200) if t % 2 == 0 else size
        pairs = [(ptr + ri(0, hi), [ri(1, 256)]) for _ in range(ri(1, 9))]
        muts.append({"desc": f"xor {len(pairs)} byte(s) in sample {i}'s JPEG",
                     "xor": [[o, b[0]] for o, b in pairs]})
    # a JPEG whose frame header claims a huge image while its record says a small one: the reader
    # must not allocate gigabytes for it (the runner caps memory, so that shows as MemoryError)
    for i, (h, w) in [(3, (40000, 40000)), (8, (50000, 50000)), (13, (65000, 65000)),
                      (21, (3000, 4000)), (22, (8, 60000))]:
        patch(f"sample {i}'s JPEG SOF says {w}x{h}",
              (lay.sof_dims[i], struct.pack(">HH", h, w)))
    for i in range(0, NUM_SAMPLES, 6):
        ptr, size = lay.jpegs[i]
        patch(f"sample {i}'s JPEG zeroed after SOI", (ptr + 2, bytes(size - 2)))
        patch(f"sample {i}'s JPEG filled with 0xFF", (ptr, b"\xff" * size))
    return muts


RUNNER = textwrap.dedent(r'''
    import faulthandler, json, os, resource, sys, traceback
    faulthandler.enable()
    import fastdata

    # A runaway allocation becomes a MemoryError (reported) instead of the OOM killer.
    try:
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
    except (ValueError, OSError):
        pass

    original_path, mutations_path, results_path, work_dir = sys.argv[1:5]
    with open(original_path, "rb") as f:
        original = f.read()
    with open(mutations_path) as f:
        mutations = json.load(f)
    MAX_SAMPLES = 300
    results = []
    for k, m in enumerate(mutations):
        print(f"START {k} {m['desc']}", flush=True)
        data = bytearray(original)
        if "truncate" in m:
            del data[m["truncate"]:]
        for off, hexbytes in m.get("patches", []):
            raw = bytes.fromhex(hexbytes)
            data[off:off + len(raw)] = raw
        for off, x in m.get("xor", []):
            data[off] ^= x
        path = os.path.join(work_dir, f"m{k}.beton")
        with open(path, "wb") as f:
            f.write(data)
        errors = []
        opened = False
        reads = 0

        def record(stage, err):
            errors.append({"stage": stage, "type": type(err).__name__,
                           "mro": [c.__name__ for c in type(err).__mro__],
                           "message": str(err)[:300],
                           "where": [line.strip() for line in
                                     traceback.format_exc().strip().splitlines()[:-1]
                                     if line.strip().strip("^~") ][-2:]})

        try:
            reader = fastdata.Reader(path)
        except Exception as err:
            record("open", err)
        else:
            opened = True
            try:
                n = len(reader)
                for i in list(range(min(n, MAX_SAMPLES))) + [-1]:
                    for name in reader.field_names:
                        try:
                            reader.read(i, name)
                            reads += 1
                        except Exception as err:
                            record(f"read {i} {name}", err)
                try:
                    reader.read(n, reader.field_names[0])
                    errors.append({"stage": "past end", "type": "(no error)", "mro": [],
                                   "message": "read(len(reader)) returned a value",
                                   "where": []})
                except Exception as err:
                    record("past end", err)
                try:
                    reader[0]
                except Exception as err:
                    record("getitem 0", err)
            finally:
                reader.close()
                del reader
        os.unlink(path)
        results.append({"k": k, "desc": m["desc"], "opened": opened, "reads": reads,
                        "errors": errors})
    with open(results_path, "w") as f:
        json.dump(results, f)
    print(f"COMPLETED {len(results)} mutations", flush=True)
''')


def test_mutated_files_never_crash(valid_file, tmp_path):
    lay = Layout(valid_file)
    muts = _mutations(lay)
    assert len(muts) >= 300
    mutations_path = tmp_path / "mutations.json"
    mutations_path.write_text(json.dumps(muts))
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    results_path = tmp_path / "results.json"
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run([sys.executable, str(script), str(valid_file), str(mutations_path),
                           str(results_path), str(work)], capture_output=True, text=True,
                          timeout=300)
    started = [line for line in proc.stdout.splitlines() if line.startswith("START ")]
    last = started[-1] if started else "(none)"
    assert proc.returncode == 0, (
        f"reader subprocess died with return code {proc.returncode} (negative: killed by "
        f"signal {-proc.returncode if proc.returncode < 0 else '-'}) while on mutation "
        f"{last!r}\nstderr tail:\n{proc.stderr[-4000:]}")
    assert "COMPLETED" in proc.stdout, proc.stdout[-2000:]
    results = json.loads(results_path.read_text())
    assert len(results) == len(muts)

    # the untouched copy reads cleanly: the harness itself is sound
    assert results[0]["opened"]
    assert [e["type"] for e in results[0]["errors"]] == ["IndexError"]
    assert results[0]["reads"] == NUM_SAMPLES * 7 + 7
    # the mutations do bite: many are refused at open, some still read fine
    refused = sum(1 for r in results if not r["opened"])
    assert refused > 100
    assert any(r["opened"] and len(r["errors"]) == 1 for r in results[1:])

    unexpected = defaultdict(list)
    for r in results:
        for e in r["errors"]:
            if not set(e["mro"]) & set(EXPECTED):
                unexpected[e["type"]].append(f"  [{r['k']}] {r['desc']}: {e['stage']}: "
                                             f"{e['message']} @ {' | '.join(e['where'])}")
    if unexpected:
        report = [f"{len(unexpected)} unexpected exception type(s) "
                  f"(bugs: should be FormatError/SampleError): {sorted(unexpected)}"]
        for name, cases in sorted(unexpected.items()):
            report.append(f"{name}: {len(cases)} case(s), e.g.")
            report.extend(cases[:6])
        pytest.fail("\n".join(report), pytrace=False)

    # a read past the end is an IndexError, every time
    for r in results:
        if r["opened"]:
            tail = [e["type"] for e in r["errors"] if e["stage"] == "past end"]
            assert tail == ["IndexError"], (r["desc"], tail)


def test_error_types_summary_is_informative(valid_file, tmp_path):
    """Open-time failures name what is wrong (not bare numpy or struct messages)."""
    lay = Layout(valid_file)
    original = valid_file.read_bytes()
    messages = Counter()
    for n in (0, 23, lay.meta_start - 1, lay.meta_end - 1, lay.alloc_ptr - 1, lay.alloc_ptr + 12):
        path = tmp_path / f"t{n}.beton"
        path.write_bytes(original[:n])
        with pytest.raises(fastdata.FormatError) as info:
            fastdata.Reader(path)
        msg = str(info.value)
        assert str(path) in msg, msg
        messages[msg.split(": ", 1)[1][:30]] += 1
    assert len(messages) >= 3


# -- targeted cases with exact messages ---------------------------------------------------------
def _patched(valid_file, tmp_path, name, pairs=(), truncate=None):
    data = bytearray(valid_file.read_bytes())
    if truncate is not None:
        del data[truncate:]
    for off, raw in pairs:
        data[off:off + len(raw)] = raw
    path = tmp_path / name
    path.write_bytes(bytes(data))
    return path


def test_truncated_to_10_bytes(valid_file, tmp_path):
    path = _patched(valid_file, tmp_path, "ten.beton", truncate=10)
    with pytest.raises(fastdata.FormatError, match="too short"):
        fastdata.Reader(path)


def test_version_3(valid_file, tmp_path):
    path = _patched(valid_file, tmp_path, "v3.beton", [(0, struct.pack("<H", 3))])
    with pytest.raises(fastdata.FormatError, match="version") as info:
        fastdata.Reader(path)
    assert "3" in str(info.value)


@pytest.mark.parametrize("delta", [1, 24, 1 << 30, 2 ** 64 - 1])
def test_alloc_table_ptr_past_eof(valid_file, tmp_path, delta):
    size = valid_file.stat().st_size
    value = min(size + delta, 2 ** 64 - 1)
    path = _patched(valid_file, tmp_path, "ap.beton", [(16, struct.pack("<Q", value))])
    with pytest.raises(fastdata.FormatError, match="allocation table"):
        fastdata.Reader(path)


@pytest.mark.parametrize("field,rel", [("blob", 0), ("meta", 0), ("raw", 5), ("jpg", 5),
                                       ("arr", 0)])
@pytest.mark.parametrize("past", [0, 100, 2 ** 63])
def test_metadata_pointer_past_end(valid_file, tmp_path, field, rel, past):
    lay = Layout(valid_file)
    sample = 5
    path = _patched(valid_file, tmp_path, "mp.beton",
                    [(lay.record(sample, field) + rel, struct.pack("<Q", lay.size + past))])
    with pytest.raises(fastdata.FormatError) as info:
        fastdata.Reader(path)
    msg = str(info.value)
    assert re.search(rf"\bsample {sample}\b", msg), msg
    assert f"'{field}'" in msg, msg


@pytest.mark.parametrize("field", ["blob", "meta"])
def test_metadata_size_past_region(valid_file, tmp_path, field):
    lay = Layout(valid_file)
    sample = 17
    path = _patched(valid_file, tmp_path, "ms.beton",
                    [(lay.record(sample, field) + 8, struct.pack("<Q", lay.size))])
    with pytest.raises(fastdata.FormatError) as info:
        fastdata.Reader(path)
    msg = str(info.value)
    assert re.search(rf"\bsample {sample}\b", msg) and f"'{field}'" in msg, msg


def test_corrupt_jpeg_is_sample_error(valid_file, tmp_path):
    lay = Layout(valid_file)
    ptr, size = lay.jpegs[4]
    path = _patched(valid_file, tmp_path, "cj.beton", [(ptr, b"\x00" * size)])
    with fastdata.Reader(path) as r:
        with pytest.raises(fastdata.SampleError) as info:
            r.read(4, "jpg")
        assert info.value.index == 4 and info.value.field == "jpg"
        assert "sample 4" in str(info.value) and "'jpg'" in str(info.value)
        r.read(3, "jpg")           # neighbours are unaffected
        r.read(4, "raw")


def test_zero_fields_is_format_error(valid_file, tmp_path):
    path = _patched(valid_file, tmp_path, "nf0.beton", [(2, struct.pack("<H", 0))])
    with pytest.raises(fastdata.FormatError):
        fastdata.Reader(path)


@pytest.mark.parametrize("page_size", [1, 2, 4096, 1 << 20])
def test_page_size_below_ffcv_minimum_is_format_error(valid_file, tmp_path, page_size):
    """No writer (FFCV's or ours) makes pages under 2 MiB; the page grouping a loader relies on
    (one page per sample) does not hold for such a header."""
    path = _patched(valid_file, tmp_path, "ps.beton", [(4, struct.pack("<I", page_size))])
    with pytest.raises(fastdata.FormatError, match="page size"):
        fastdata.Reader(path)


@pytest.mark.parametrize("shape", [(2 ** 62, 4), (2 ** 61, 8), (2 ** 32, 2 ** 32, 3),
                                   (2 ** 63, 3), (2 ** 64 - 1, 3), (2 ** 62, 3)])
def test_ndarray_shape_overflow_is_format_error(valid_file, tmp_path, shape):
    """A corrupt shape whose byte count overflows 64 bits must not wrap to a small size (which
    would let the field open with a bogus shape) nor escape as OverflowError."""
    lay = Layout(valid_file)
    args = lay.desc("arr") + 17
    words = b"".join(struct.pack("<Q", d) for d in shape)
    path = _patched(valid_file, tmp_path, "sh.beton", [(args, words)])
    with pytest.raises(fastdata.FormatError) as info:
        fastdata.Reader(path)
    assert "'arr'" in str(info.value) or "array" in str(info.value), str(info.value)


def test_jpeg_header_size_mismatch_is_sample_error(valid_file, tmp_path):
    lay = Layout(valid_file)
    path = _patched(valid_file, tmp_path, "sof.beton",
                    [(lay.sof_dims[9], struct.pack(">HH", 300, 400))])
    with fastdata.Reader(path) as r:
        with pytest.raises(fastdata.SampleError) as info:
            r.read(9, "jpg")
        assert info.value.index == 9 and info.value.field == "jpg"
        assert r.read(10, "jpg").shape[2] == 3


# -- structure: every allocated region is exactly one value of its own sample ---------------------
def _value_at(valid_file, sample, field):
    """(pointer, size) of one stored value, and the file offset of its metadata record."""
    with fastdata.Reader(valid_file) as r:
        return int(r.payload_ptrs(field)[sample]), int(r.payload_sizes(field)[sample])


def _ptr_patch(lay, sample, field, ptr, size=None):
    """Patches pointing (sample, field) at ``ptr`` (and, for ptr+size records, ``size``)."""
    rel = {"raw": 5, "jpg": 5}.get(field, 0)
    pairs = [(lay.record(sample, field) + rel, struct.pack("<Q", ptr))]
    if size is not None:
        pairs.append((lay.record(sample, field) + 8, struct.pack("<Q", size)))
    return pairs


@pytest.mark.parametrize("field", ["blob", "meta", "jpg", "arr"])
def test_pointer_onto_another_samples_region(valid_file, tmp_path, field):
    """The value fits the region it now points at, but the table gives that region to sample 6."""
    lay = Layout(valid_file)
    ptr, size = _value_at(valid_file, 6, field)
    path = _patched(valid_file, tmp_path, "b.beton",
                    _ptr_patch(lay, 5, field, ptr, size if field in ("blob", "meta") else None))
    with pytest.raises(fastdata.FormatError) as info:
        fastdata.Reader(path)
    msg = str(info.value)
    assert str(path) in msg and f"sample 5, field '{field}'" in msg, msg
    assert f"data pointer {ptr} is the start of a region that the allocation table gives to " \
           f"sample 6, not to sample 5" in msg, msg


def test_pointer_onto_a_side_table(valid_file, tmp_path):
    lay = Layout(valid_file)
    with fastdata.Reader(valid_file) as r:
        side_ptr = r.fields["raw"].side_table_location[0]
    path = _patched(valid_file, tmp_path, "st.beton", _ptr_patch(lay, 2, "jpg", side_ptr))
    with pytest.raises(fastdata.FormatError, match=r"sample 2, field 'jpg': data pointer \d+ is "
                       r"the start of a region that the allocation table gives to no sample"):
        fastdata.Reader(path)


def test_raw_image_smaller_than_its_region(valid_file, tmp_path):
    """A raw record whose width x height x 3 is less than its region: a corrupt width."""
    lay = Layout(valid_file)
    with fastdata.Reader(valid_file) as r:
        width, height = r.read(5, "raw").shape[1], r.read(5, "raw").shape[0]
        region = int(r.payload_sizes("raw")[5])
    assert region == width * height * 3
    path = _patched(valid_file, tmp_path, "c.beton",
                    [(lay.record(5, "raw") + 1, struct.pack("<H", width - 1))])
    with pytest.raises(fastdata.FormatError) as info:
        fastdata.Reader(path)
    assert f"sample 5, field 'raw': raw image of {width - 1}x{height} is " \
           f"{(width - 1) * height * 3} bytes but its allocated region holds {region} bytes" \
           in str(info.value), str(info.value)


@pytest.mark.parametrize("field", ["blob", "meta"])
def test_value_shorter_than_its_region(valid_file, tmp_path, field):
    """Both writers record a byte string's exact size: a shorter one in the metadata is corrupt."""
    lay = Layout(valid_file)
    ptr, size = _value_at(valid_file, 17, field)
    path = _patched(valid_file, tmp_path, "short.beton", _ptr_patch(lay, 17, field, ptr, size - 1))
    with pytest.raises(fastdata.FormatError, match=rf"sample 17, field '{field}': value of "
                                                   rf"{size - 1} bytes where its allocated region "
                                                   rf"holds {size} bytes"):
        fastdata.Reader(path)


def test_two_fields_sharing_one_region(valid_file, tmp_path):
    lay = Layout(valid_file)
    ptr, size = _value_at(valid_file, 3, "meta")
    path = _patched(valid_file, tmp_path, "d2.beton", _ptr_patch(lay, 3, "blob", ptr, size))
    with pytest.raises(fastdata.FormatError, match=rf"sample 3, fields 'blob', 'meta': 2 values "
                                                   rf"point at the same region \(ptr {ptr}, "
                                                   rf"{size} bytes\)"):
        fastdata.Reader(path)


@pytest.mark.parametrize("owner", ["sample 2", "no sample"])
def test_region_no_value_refers_to(valid_file, tmp_path, owner):
    """An extra allocation entry, in free space after the last region: for sample 2, or for no
    sample (as side tables are) though no field has a side table there."""
    lay = Layout(valid_file)
    with fastdata.Reader(valid_file) as r:
        free = int((r.alloc_table["ptr"] + r.alloc_table["size"]).max()) + 8
    assert free + 16 <= lay.alloc_ptr
    sample_id = 2 if owner == "sample 2" else fmt.NO_SAMPLE_ID
    entry = np.array([(sample_id, free, 16)], dtype=fmt.ALLOC_ENTRY_DTYPE)
    path = tmp_path / "d3.beton"
    path.write_bytes(valid_file.read_bytes() + entry.tobytes())
    expected = (rf"\(sample 2, ptr {free}, 16 bytes\) is the value of no field of sample 2"
                if owner == "sample 2" else
                rf"\(ptr {free}, 16 bytes\) belongs to no sample and is no field's side table")
    with pytest.raises(fastdata.FormatError, match=rf"allocation entry {lay.num_entries} "
                                                   + expected):
        fastdata.Reader(path)


def test_image_type_changed_to_int_leaves_regions_unreferenced(tmp_path):
    """Type id 2 -> 0 makes the image an IntField: the metadata then reads as other numbers and
    every image region is left without a value."""
    path = tmp_path / "typed.beton"
    images = [_image(6 + k, 5 + k, k) for k in range(4)]
    fastdata.DatasetWriter(path, {"image": fastdata.RGBImageField("raw"),
                                  "label": fastdata.IntField()},
                           page_size=PAGE, num_workers=1, progress=False).from_indexed_dataset(
        [(im, k) for k, im in enumerate(images)])
    data = bytearray(path.read_bytes())
    assert data[fmt.HEADER_SIZE] == fastdata.RGBImageField.TYPE_ID
    data[fmt.HEADER_SIZE] = fastdata.IntField.TYPE_ID
    path.write_bytes(bytes(data))
    with pytest.raises(fastdata.FormatError, match=r"typed\.beton: allocation entry 0 \(sample 0, "
                       r"ptr \d+, 90 bytes\) is the value of no field of sample 0: a corrupt field "
                       r"type id"):
        fastdata.Reader(path)


def _side_table_offset(valid_file, field):
    with fastdata.Reader(valid_file) as r:
        ptr, count = r.fields[field].side_table_location
        return ptr, r.side_table(field).copy()


def test_zeroed_original_sizes(valid_file, tmp_path):
    ptr, table = _side_table_offset(valid_file, "raw")
    path = _patched(valid_file, tmp_path, "e0.beton", [(ptr, bytes(table.nbytes))])
    with pytest.raises(fastdata.FormatError, match=r"sample 0, field 'raw': original size 0x0 in "
                                                   r"the side table is smaller than the stored "
                                                   r"9x8"):
        fastdata.Reader(path)


def test_original_size_smaller_than_stored(valid_file, tmp_path):
    ptr, table = _side_table_offset(valid_file, "jpg")
    width, height = int(table[4]["width"]), int(table[4]["height"])
    at = ptr + 4 * table.itemsize + 4          # sample 4's original height
    path = _patched(valid_file, tmp_path, "e1.beton", [(at, struct.pack("<I", height - 1))])
    with pytest.raises(fastdata.FormatError, match=rf"sample 4, field 'jpg': original size "
                                                   rf"{width}x{height - 1} in the side table is "
                                                   rf"smaller than the stored {width}x{height}"):
        fastdata.Reader(path)


# FFCV's own file shapes stay readable: its empty values are zero-size regions that share the
# next region's pointer, or lie before the data pages (the first value of a worker).
@pytest.mark.parametrize("where", ["next region", "before the pages"])
def test_ffcv_empty_values_still_open(tmp_path, where):
    path = tmp_path / "empty.beton"
    samples = [(b"", np.full(3, k, np.float32)) for k in range(3)] + \
              [(b"xyz", np.full(3, 9, np.float32))]
    fastdata.DatasetWriter(path, {"blob": fastdata.BytesField(),
                                  "arr": fastdata.NDArrayField(np.float32, (3,))},
                           page_size=PAGE, num_workers=1, progress=False).from_indexed_dataset(
        samples)
    with fastdata.Reader(path) as r:
        blob_ptrs, arr_ptrs = r.payload_ptrs("blob").copy(), r.payload_ptrs("arr").copy()
        meta_start, itemsize = fmt.metadata_start(2), r.metadata_dtype.itemsize
        table = r.alloc_table.copy()
        alloc_ptr, page_size = r.alloc_table_ptr, r.page_size
        data_start = fmt.align_up(meta_start + len(r) * itemsize, page_size)
    data = bytearray(path.read_bytes())
    for i in range(3):                        # as FFCV would have stored the empty blobs
        new_ptr = int(arr_ptrs[i]) if where == "next region" else data_start - page_size
        data[meta_start + i * itemsize:meta_start + i * itemsize + 8] = struct.pack("<Q", new_ptr)
        k = int(np.flatnonzero(table["ptr"] == blob_ptrs[i])[0])
        data[alloc_ptr + 24 * k + 8:alloc_ptr + 24 * k + 16] = struct.pack("<Q", new_ptr)
    path.write_bytes(bytes(data))
    with fastdata.Reader(path) as r:
        assert [r[i][0] for i in range(4)] == [b"", b"", b"", b"xyz"]
        assert [float(r[i][1][0]) for i in range(4)] == [0, 1, 2, 9]
