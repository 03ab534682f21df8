"""Writer throughput for a user's Python dataset: worker threads vs worker processes.

    python bench/write_workers.py --data /path/to/imagenet-like/train --limit 400 --workers 2

The dataset is what a user of FFCV's ``from_indexed_dataset`` typically writes: ``__getitem__``
opens a photo with PIL, converts it to RGB and returns ``(image, label)``.  Both runs write it
with ``RGBImageField(write_mode='jpg', max_resolution=256)`` and ``IntField()``, the same
``num_workers`` and ``chunksize``; one with ``worker_type='thread'``, one with
``worker_type='process'`` (the default for such a dataset: it is what keeps each record exactly
``dataset[i]`` when ``__getitem__`` uses process-global state).  Runs alternate; the table gives
the median wall time of the write call over repeats, and the ratio.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from fastdata import DatasetWriter, IntField, RGBImageField  # noqa: E402
from writers.imagenet import ImageNetFolder  # noqa: E402


class PILDataset:
    """(PIL RGB image, label) per sample, decoded in ``__getitem__``."""

    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        from PIL import Image
        path, label = self.samples[i]
        with Image.open(path) as img:
            return img.convert("RGB"), label


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="an ImageNet-style split folder")
    parser.add_argument("--limit", type=int, default=400)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunksize", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    dataset = PILDataset(ImageNetFolder.scan(args.data).samples[:args.limit])
    times: dict[str, list[float]] = {"thread": [], "process": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for kind in times:
                writer = DatasetWriter(os.path.join(tmp, f"{kind}.beton"),
                                       {"image": RGBImageField("jpg", 256), "label": IntField()},
                                       num_workers=args.workers, progress=False)
                started = time.perf_counter()
                writer.from_indexed_dataset(dataset, chunksize=args.chunksize, worker_type=kind)
                times[kind].append(time.perf_counter() - started)
    thread, process = (statistics.median(times[k]) for k in ("thread", "process"))
    n = len(dataset)
    print(f"{n} samples, {args.workers} workers, chunksize {args.chunksize}, "
          f"median of {args.repeats}")
    print(f"{'workers':>8} {'seconds':>8} {'images/s':>9}")
    for kind, seconds in (("thread", thread), ("process", process)):
        print(f"{kind:>8} {seconds:8.2f} {n / seconds:9.1f}")
    print(f"process / thread time: {process / thread:.2f}")


if __name__ == "__main__":
    main()
