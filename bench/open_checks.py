"""Cost of the open-time structure checks on an ImageNet-sized file (1.28M records by default).

The file is crafted directly with fastdata's format code rather than written sample by sample
(that would take minutes): an ImageNet-shaped record, ``image`` (RGBImageField, raw 4 x 4 pixels)
and ``label`` (IntField), so the metadata, allocation table and side table have their real
sizes while the pages stay small.  Two layouts:

- ``fastdata``: as fastdata's writer lays a file out (samples in order, table sorted by pointer,
  a side table of original sizes);
- ``ffcv``: as FFCV's writer does with 16 worker processes (chunks of 100 samples dealt to
  workers, each filling pages of its own, the table concatenated worker by worker; no side
  table), so neither the table nor the pointers are in order.

Printed: the best and median time to open the file with every check, with the structure checks added for
issue 8 (region <-> value matching, original sizes) switched off, and those checks alone.

    python bench/open_checks.py --out /tmp/open_checks.beton [--n 1281167] [--layout fastdata]
        [--repeat 5] [--keep]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from fastdata import IntField, Reader, RGBImageField
from fastdata import format as fmt
from fastdata.constants import DEFAULT_PAGE_SIZE
from fastdata.fields.base import Field
from fastdata.reader import check_regions_match_values

WIDTH = HEIGHT = 4
PAYLOAD = WIDTH * HEIGHT * 3
FFCV_WORKERS, FFCV_CHUNK = 16, 100


def craft(path: str, n: int, layout: str, page_size: int = DEFAULT_PAGE_SIZE) -> None:
    """Write a valid .beton file of ``n`` samples (image, label) without encoding any."""
    image, label = RGBImageField("raw"), IntField()
    record = fmt.metadata_dtype([image.metadata_dtype, label.metadata_dtype])
    data_start = fmt.data_start(2, n, record.itemsize, page_size)
    per_page = page_size // PAYLOAD
    samples = np.arange(n, dtype=np.uint64)
    if layout == "fastdata":
        table_order = samples                        # placed and recorded in sample order
        pages = samples // per_page
        offsets = samples % per_page * PAYLOAD
    else:
        worker = (samples // FFCV_CHUNK) % FFCV_WORKERS
        table_order = np.argsort(worker, kind="stable").astype(np.uint64)   # worker by worker
        rank = np.empty(n, dtype=np.uint64)          # position of a sample in its worker's list
        counts = np.bincount(worker.astype(np.int64), minlength=FFCV_WORKERS)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.uint64)
        rank[table_order] = np.arange(n, dtype=np.uint64) - starts[worker[table_order]]
        pages = rank // per_page * FFCV_WORKERS + worker
        offsets = rank % per_page * PAYLOAD
    ptrs = np.uint64(data_start) + pages * np.uint64(page_size) + offsets
    data_end = data_start + (int(pages.max()) + 1) * page_size

    entries = [np.rec.fromarrays([table_order, ptrs[table_order],
                                  np.full(n, PAYLOAD, np.uint64)], dtype=fmt.ALLOC_ENTRY_DTYPE)]
    side_table = None
    if layout == "fastdata":        # original sizes on fresh pages after the data, as the writer
        side_table = np.zeros(n, dtype=RGBImageField.side_table_dtype)
        side_table["width"], side_table["height"] = 2 * WIDTH, 2 * HEIGHT
        entries.append(np.array([(fmt.NO_SAMPLE_ID, data_end, side_table.nbytes)],
                                dtype=fmt.ALLOC_ENTRY_DTYPE))
        data_end = fmt.align_up(data_end + side_table.nbytes, page_size)
    table = np.concatenate(entries).view(fmt.ALLOC_ENTRY_DTYPE)

    metadata = np.zeros(n, dtype=record)
    metadata["f0"]["mode"], metadata["f0"]["width"], metadata["f0"]["height"] = 1, WIDTH, HEIGHT
    metadata["f0"]["data_ptr"] = ptrs
    metadata["f1"] = samples % 1000
    header = np.zeros((), dtype=fmt.HEADER_DTYPE)
    header["version"], header["num_fields"], header["page_size"] = fmt.VERSION, 2, page_size
    header["num_samples"], header["alloc_table_ptr"] = n, data_end
    descriptors = np.zeros(2, dtype=fmt.FIELD_DESC_DTYPE)
    for k, (name, field) in enumerate([("image", image), ("label", label)]):
        descriptors[k]["type_id"] = field.TYPE_ID
        descriptors[k]["name"] = fmt.encode_name(name)
    if side_table is not None:
        descriptors[0]["arguments"] = image.to_arguments((int(table[-1]["ptr"]), n))
    with open(path, "wb") as f:
        f.write(header.tobytes() + descriptors.tobytes() + metadata.tobytes())
        if side_table is not None:
            f.seek(int(table[-1]["ptr"]))
            f.write(side_table.tobytes())
        f.truncate(data_end)          # the pixel pages stay sparse zeros
        f.seek(data_end)
        f.write(table.tobytes())


def new_checks(reader: Reader) -> None:
    """The checks issue 8 added, run again on an open reader."""
    column = reader.column("image")
    if reader.side_table("image") is not None:
        reader.fields["image"].check_side_table(column, reader.side_table("image"), "image")
    reader._check_regions_match_values()


def seconds(fn, repeat: int) -> tuple[float, float]:
    """(best, median) wall time of ``repeat`` calls; the best is the least disturbed by other
    work on a shared machine."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="where to write the crafted .beton file")
    ap.add_argument("--n", type=int, default=1_281_167, help="records (ImageNet train: 1281167)")
    ap.add_argument("--layout", choices=["fastdata", "ffcv"], default="fastdata")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--keep", action="store_true", help="leave the file at --out")
    args = ap.parse_args()

    start = time.perf_counter()
    craft(args.out, args.n, args.layout)
    print(f"crafted {args.n} records ({args.layout} layout, {os.path.getsize(args.out) / 1e6:.0f} "
          f"MB) in {time.perf_counter() - start:.1f} s")
    try:
        Reader(args.out).close()               # warm the page cache
        with_checks = seconds(lambda: Reader(args.out).close(), args.repeat)
        check_side_table = RGBImageField.check_side_table
        check_regions = Reader._check_regions_match_values
        try:
            RGBImageField.check_side_table = Field.check_side_table
            Reader._check_regions_match_values = lambda self: None
            without = seconds(lambda: Reader(args.out).close(), args.repeat)
        finally:
            RGBImageField.check_side_table = check_side_table
            Reader._check_regions_match_values = check_regions
        with Reader(args.out) as reader:
            alone = seconds(lambda: new_checks(reader), args.repeat)
            # the function the reader calls, on the same arrays: a sanity check that it ran
            check_regions_match_values(reader.alloc_table,
                                       [("image", reader.payload_ptrs("image"),
                                         reader.payload_sizes("image"))], len(reader),
                                       [int(reader.alloc_table[-1]["ptr"])]
                                       if args.layout == "fastdata" else [])
    finally:
        if not args.keep:
            os.unlink(args.out)
    print(f"best / median of {args.repeat}, seconds:")
    for what, (best, median) in [("open, all checks", with_checks),
                                 ("open without the issue-8 structure checks", without),
                                 ("those checks alone", alone)]:
        print(f"  {what:<44} {best:.3f} / {median:.3f}")


if __name__ == "__main__":
    main()
