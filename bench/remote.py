"""Remote .beton files: the training pipeline over s3:// (a local moto S3 server) vs local disk.

    python bench/remote.py --data DIR [--work-dir DIR] [--threads 2] [--epochs 2]

Writes ``DIR/train.beton`` from the ImageNet-style folder ``--data`` once (``fastdata write
imagenet --max-resolution 256 --write-mode jpg``), starts ``python -m moto.server`` on 127.0.0.1
(its own process), uploads the file, then for order quasi_random and random runs ``--epochs``
epochs of RandomResizedCrop(224) + RandomHorizontalFlip (batches of 256, ``--threads`` workers)
from the local file and from ``s3://bench/train.beton`` (page cache in memory, no size limit).
Each epoch's img/s is the images of the epoch over its wall time, from ``iter()`` to the last
batch; bytes fetched are the remote page bytes that epoch (ideal: the file's size in the first
epoch, none after).  Both sources use the same process and Numba cache; a one-epoch warm-up on
the local file runs first (JIT compilation); ``--repeat`` runs of each are interleaved.  Prints a
markdown table: median img/s (min-max) and the ratio of the medians.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from remote_servers import MotoServer, storage_options  # noqa: E402


def make_file(data: str, work_dir: str) -> str:
    path = os.path.join(work_dir, "train.beton")
    if not os.path.exists(path):
        os.makedirs(work_dir, exist_ok=True)
        subprocess.run([sys.executable, "-m", "fastdata.cli", "write", "imagenet", "--data-dir",
                        data, "--out", path, "--max-resolution", "256", "--write-mode", "jpg",
                        "--quiet"], check=True)
    return path


def run_epochs(source: str, order: str, threads: int, epochs: int, options=None):
    from fastdata import Loader
    from fastdata.ops import (IntDecoder, RandomHorizontalFlip, RandomResizedCrop, Squeeze,
                              ToTensor, ToTorchImage)
    kwargs = {} if options is None else {"storage_options": options}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")       # order='random' over s3 warns (measured here)
        loader = Loader(source, batch_size=256, num_workers=threads, order=order, seed=0,
                        drop_last=False, pipelines={
                            "image": [RandomResizedCrop(224), RandomHorizontalFlip(), ToTensor(),
                                      ToTorchImage()],
                            "label": [IntDecoder(), ToTensor(), Squeeze()]}, **kwargs)
    rows = []
    remote = loader.reader.remote
    for epoch in range(epochs):
        # epoch 1 counts from the Loader's creation: the pages read at open are the file's too
        before = remote.stats.bytes_fetched if remote and epoch else 0
        images = 0
        start = time.perf_counter()
        for x, _ in loader:
            images += len(x)
        seconds = time.perf_counter() - start
        fetched = (remote.stats.bytes_fetched - before) if remote else 0
        rows.append((epoch, images / seconds, fetched))
    loader.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="ImageNet-style folder (DIR/train/...)")
    parser.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(),
                                                          "fastdata-bench-remote"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of each (order, source), interleaved; tables give medians")
    args = parser.parse_args()
    path = make_file(args.data, args.work_dir)
    size = os.path.getsize(path)
    server = MotoServer()
    try:
        url = server.upload(path, "bench", "train.beton")
        options = storage_options(server.url)
        run_epochs(path, "quasi_random", args.threads, 1)          # JIT warm-up
        results: dict = {}
        for _ in range(args.repeat):
            for order in ("quasi_random", "random"):
                results.setdefault((order, "local"), []).append(
                    run_epochs(path, order, args.threads, args.epochs))
                results.setdefault((order, "s3"), []).append(
                    run_epochs(url, order, args.threads, args.epochs, options))
    finally:
        server.stop()
    print(f"file: {path}, {size / 2**20:.1f} MiB; batch 256, {args.threads} worker threads, "
          f"RandomResizedCrop(224) + flip; s3 = moto server on 127.0.0.1\n")
    print(f"img/s: median (min-max) of {args.repeat} runs\n")
    print("| order | epoch | local img/s | s3 img/s | s3 / local (medians) | MiB fetched from s3 "
          "(epoch 1: from open) | fetched / file size |")
    print("|---|---|---|---|---|---|---|")

    def rates(runs, e):
        values = sorted(run[e][1] for run in runs)
        return values[len(values) // 2], f"{values[len(values) // 2]:.0f} " \
            f"({values[0]:.0f}-{values[-1]:.0f})"
    for order in ("quasi_random", "random"):
        for e in range(args.epochs):
            local_median, local_text = rates(results[(order, "local")], e)
            s3_median, s3_text = rates(results[(order, "s3")], e)
            fetched = [run[e][2] for run in results[(order, "s3")]]
            fetched_text = "/".join(f"{f / 2**20:.1f}" for f in sorted(set(fetched)))
            print(f"| {order} | {e + 1} | {local_text} | {s3_text} | "
                  f"{s3_median / local_median:.2f} | {fetched_text} | "
                  f"{max(fetched) / size:.2f} |")


if __name__ == "__main__":
    main()
