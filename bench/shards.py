"""Sharded conversion and merge: N writer processes (one shard each) vs one writer, and the
throughput of ``fastdata merge`` vs a plain copy of the same shard files.

    python bench/shards.py --data DIR --shards 2 --workers 1

- ``one writer``: ``python -m fastdata.cli write imagenet --data-dir DATA --workers N*W``;
- ``N shards``: N such commands started at once, ``--shard K/N --workers W`` each (what N
  machines or jobs of a scheduler would run; here on this one machine), timed until the last
  ends.
Both are timed from outside with the wall clock (interpreter start, folder scan, fsync
included); the runs alternate, ``--repeats`` times each, and the median is reported.  The page
cache is warmed by reading every source file once first.

Then the shards are merged (``fastdata.merge.merge_shards``, validation of the inputs and of the
result included) and, for reference, the same shard files are copied with ``shutil.copyfile``
(the kernel's file copy); both rates are output megabytes (1e6) per second of wall time.  The
merged file is checked to hold the one writer's records byte for byte.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def warm_page_cache(root: str) -> int:
    total = 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(dirpath, name), "rb") as f:
                while chunk := f.read(1 << 20):
                    total += len(chunk)
    return total


def write_command(data: str, out: str, workers: int, shard: str | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "fastdata.cli", "write", "imagenet", "--data-dir", data,
           "--split", "train", "--out", out, "--workers", str(workers), "--quiet"]
    return cmd + (["--shard", shard] if shard else [])


def timed(commands: list[list[str]]) -> float:
    """Wall seconds from starting every command at once until the last one ends."""
    started = time.perf_counter()
    procs = [subprocess.Popen(c, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for c in commands]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            sys.exit(f"failed ({proc.returncode}): {' '.join(proc.args)}\n{err.decode()[-2000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="ImageNet-style folder (DATA/train/...)")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1, help="encoding threads per shard")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--tmp", default=None, help="folder for the .beton files (removed)")
    args = parser.parse_args()

    from fastdata import Reader
    from fastdata.merge import merge_shards

    n = args.shards
    source_bytes = warm_page_cache(os.path.join(args.data, "train"))
    tmp = tempfile.mkdtemp(prefix="fastdata-shards-", dir=args.tmp)
    try:
        one = os.path.join(tmp, "one.beton")
        shards = [os.path.join(tmp, f"train-{k}-of-{n}.beton") for k in range(n)]
        one_times, shard_times = [], []
        for _ in range(args.repeats):
            one_times.append(timed([write_command(args.data, one, n * args.workers)]))
            shard_times.append(timed([write_command(args.data, s, args.workers, f"{k}/{n}")
                                      for k, s in enumerate(shards)]))
        with Reader(one) as reader:
            num_images = len(reader)
        t_one, t_shards = statistics.median(one_times), statistics.median(shard_times)
        print(f"data: {args.data}/train, {num_images} images, {source_bytes / 1e6:.0f} MB; "
              f"{os.cpu_count()} cores; load average at the end "
              f"{os.getloadavg()[0]:.1f}; median of {args.repeats}")
        print(f"one writer ({n * args.workers} threads):            {t_one:7.1f} s "
              f"({num_images / t_one:5.0f} images/s)")
        print(f"{n} shard writers in parallel ({args.workers} thread each): {t_shards:7.1f} s "
              f"({num_images / t_shards:5.0f} images/s)")
        print(f"ratio one / sharded: {t_one / t_shards:.2f}x")

        merged = os.path.join(tmp, "merged.beton")
        report = merge_shards(shards, merged)
        copies = [os.path.join(tmp, f"copy-{k}") for k in range(n)]
        started = time.perf_counter()
        for src, dst in zip(shards, copies):
            shutil.copyfile(src, dst)
            with open(dst, "rb+") as f:
                os.fsync(f.fileno())
        copy_seconds = time.perf_counter() - started
        copy_mb = sum(os.path.getsize(c) for c in copies) / 1e6
        print(f"merge of {n} shards: {report.file_size / 1e6:.0f} MB in {report.seconds:.2f} s: "
              f"{report.megabytes_per_second:.0f} MB/s")
        print(f"plain copy of the shard files: {copy_mb:.0f} MB in {copy_seconds:.2f} s: "
              f"{copy_mb / copy_seconds:.0f} MB/s; ratio merge / copy: "
              f"{report.megabytes_per_second / (copy_mb / copy_seconds):.2f}x")
        with Reader(one) as a, Reader(merged) as b:
            same = len(a) == len(b) and all(
                bytes(a.payload(i, "image")) == bytes(b.payload(i, "image"))
                and a.read(i, "label") == b.read(i, "label") for i in range(len(a)))
        print(f"merged file holds the one writer's records byte for byte: {same}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
