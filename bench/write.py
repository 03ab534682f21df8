"""Writer throughput and file size: fastdata vs FFCV 1.0.2 on the same folder, same settings.

    python bench/write.py --data /path/to/imagenet-like --workers 2 --modes proportion,jpg \\
        --max-resolution 500 --ffcv-python /path/to/ffcv-venv/bin/python

For each write mode (FFCV's ``write_mode`` values) and each repeat, three runs are interleaved:

- ``ffcv``: a script under the FFCV interpreter doing exactly what ffcv-imagenet's
  ``write_imagenet.py`` does: an ImageFolder-ordered dataset of ``(PIL image .convert('RGB'),
  label)`` (built here, as torchvision is not needed), ``DatasetWriter(out, {'image':
  RGBImageField(write_mode, max_resolution, compress_probability, jpeg_quality), 'label':
  IntField()}, num_workers=W).from_indexed_dataset(ds, chunksize=100)``.  Its time is measured
  inside the script, from creating the DatasetWriter to the end of the write call (FFCV's
  interpreter start and imports are reported separately);
- ``fastdata``: ``python -m fastdata.cli write imagenet ... --quiet``, timed from outside with
  the wall clock (interpreter start, folder scan and the final fsync included): source JPEGs that
  need no resize are stored as they are;
- ``fastdata --reencode``: the same, re-encoding every JPEG as FFCV does.

The page cache is warmed by reading every source file once before any timing.  The table gives
the median over repeats.  The FFCV columns are left out, with a note, when no FFCV interpreter is
given (``--ffcv-python`` or the environment variable FASTDATA_FFCV_PYTHON).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = ("raw", "jpg", "proportion", "smart")

FFCV_SCRIPT = os.path.join(REPO, "bench", "peers", "ffcv_write.py")

FFCV_PROBE = r'''
import json, sys, importlib.metadata as md
import ffcv
print(json.dumps({"ffcv": md.version("ffcv"), "python": sys.version.split()[0]}))
'''


class BenchError(Exception):
    pass


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="fastdata vs FFCV .beton writer throughput and size")
    p.add_argument("--data", required=True, metavar="DIR",
                   help="ImageNet-style root holding train/<class>/<images>")
    p.add_argument("--split", default="train", help="split folder under --data (default train)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="only the first N images in ImageFolder order (default all)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--modes", default="proportion,jpg",
                   help=f"comma-separated write modes, of {', '.join(MODES)}")
    p.add_argument("--max-resolution", type=int, default=500)
    p.add_argument("--jpeg-quality", type=int, default=90)
    p.add_argument("--compress-probability", type=float, default=0.5)
    p.add_argument("--repeat", type=int, default=1, help="runs per writer and mode (median)")
    p.add_argument("--ffcv-python", default=os.environ.get("FASTDATA_FFCV_PYTHON"),
                   metavar="PATH", help="a python that can import ffcv (default: "
                                        "$FASTDATA_FFCV_PYTHON); FFCV is skipped without it")
    p.add_argument("--out-dir", default=None, metavar="DIR",
                   help="where the .beton files go (kept); default: a temporary folder, deleted")
    args = p.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in args.modes if m not in MODES]
    if bad or not args.modes:
        p.error(f"--modes: unknown {bad or '(none)'}; choose from {', '.join(MODES)}")
    if args.limit is not None and args.limit <= 0:
        p.error("--limit must be positive")
    if args.workers <= 0 or args.repeat <= 0:
        p.error("--workers and --repeat must be positive")
    return args


# -- the dataset ---------------------------------------------------------------------------------
def list_images(root: str, limit: Optional[int]) -> list[str]:
    """The source files in ImageFolder order (as both writers see them)."""
    sys.path.insert(0, REPO)
    from fastdata.writers.imagenet import ImageNetFolder
    folder = ImageNetFolder.scan(root)
    paths = [p for p, _ in folder.samples]
    return paths[:limit] if limit else paths


def warm_page_cache(paths: list[str]) -> tuple[int, float]:
    started = time.perf_counter()
    total = 0
    for path in paths:
        with open(path, "rb") as f:
            while True:
                chunk = f.read(1 << 20)
                if not chunk:
                    break
                total += len(chunk)
    return total, time.perf_counter() - started


# -- machine and versions ------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def mem_total_gib() -> Optional[float]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 1024 ** 2
    except OSError:
        pass
    return None


def fastdata_versions() -> dict:
    import cv2
    import numpy
    import PIL
    import simplejpeg
    from PIL import features
    import fastdata
    return {"fastdata": fastdata.__version__, "python": platform.python_version(),
            "numpy": numpy.__version__, "opencv": cv2.__version__,
            "simplejpeg": simplejpeg.__version__, "pillow": PIL.__version__,
            "libjpeg-turbo (Pillow)": features.version("libjpeg_turbo")}


def probe_ffcv(exe: str) -> dict:
    if not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
        raise BenchError(f"--ffcv-python {exe} is not an executable file")
    proc = subprocess.run([exe, "-c", FFCV_PROBE], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        raise BenchError(f"--ffcv-python {exe} cannot import ffcv: {last}")
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise BenchError(f"--ffcv-python {exe} did not run the ffcv probe (output "
                         f"{proc.stdout[-200:]!r})") from None


# -- the runs ------------------------------------------------------------------------------------
def _fail(what: str, proc: subprocess.CompletedProcess) -> BenchError:
    tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
    return BenchError(f"{what} failed with status {proc.returncode}:\n{tail}")


def run_fastdata(args, out: str, mode: str, reencode: bool) -> dict:
    cmd = [sys.executable, "-m", "fastdata.cli", "write", "imagenet", "--data-dir", args.data,
           "--split", args.split, "--out", out, "--write-mode", mode,
           "--max-resolution", str(args.max_resolution), "--jpeg-quality", str(args.jpeg_quality),
           "--compress-probability", str(args.compress_probability),
           "--workers", str(args.workers), "--quiet"]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    if reencode:
        cmd.append("--reencode")
    cpu0 = children_cpu_seconds()
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - started
    cpu = children_cpu_seconds() - cpu0
    if proc.returncode != 0:
        raise _fail("fastdata" + (" --reencode" if reencode else ""), proc)
    match = re.search(r"wrote (\d+) samples .* in ([\d.]+) s", proc.stdout)
    if not match:
        raise BenchError(f"cannot parse fastdata's report: {proc.stdout.strip()!r}")
    return {"n": int(match.group(1)), "seconds": wall, "inner_seconds": float(match.group(2)),
            "cpu_seconds": cpu,
            "size": os.path.getsize(out), "data": payload_bytes(out)}


def run_ffcv(args, script: str, root_dir: str, out: str, mode: str) -> dict:
    cfg = {"root": root_dir, "out": out, "mode": mode, "limit": args.limit,
           "max_resolution": args.max_resolution, "jpeg_quality": args.jpeg_quality,
           "compress_probability": args.compress_probability, "workers": args.workers}
    started = time.perf_counter()
    proc = subprocess.run([args.ffcv_python, script, json.dumps(cfg)], capture_output=True,
                          text=True, cwd=os.path.dirname(script))
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise _fail("FFCV", proc)
    try:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise BenchError(f"cannot parse the FFCV script's output: {proc.stdout[-500:]!r}")
    result.update(wall=wall, size=os.path.getsize(out), data=payload_bytes(out))
    return result


def payload_bytes(path: str) -> int:
    """Bytes of the samples' stored values: the sizes in the allocation table, less fastdata's
    side tables (sample id 2**64-1).  File sizes move in whole pages; this does not."""
    import numpy as np
    header = np.fromfile(path, dtype=[("version", "<u2"), ("num_fields", "<u2"),
                                      ("page_size", "<u4"), ("num_samples", "<u8"),
                                      ("alloc_table_ptr", "<u8")], count=1)[0]
    table = np.fromfile(path, dtype=[("sample_id", "<u8"), ("ptr", "<u8"), ("size", "<u8")],
                        offset=int(header["alloc_table_ptr"]))
    return int(table["size"][table["sample_id"] != np.uint64(2 ** 64 - 1)].sum())


def cpu_busy_seconds() -> Optional[float]:
    """CPU seconds all processes on the machine have used (from /proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        ticks = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal
    busy = sum(int(x) for i, x in enumerate(fields[1:9]) if i not in (3, 4))
    return busy / ticks


def children_cpu_seconds() -> float:
    import resource
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def own_cpu_seconds() -> float:
    import resource
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    return total


def remove(path: str) -> None:
    for p in (path, path + ".errors.tsv"):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


# -- the report ----------------------------------------------------------------------------------
def median(values: list[float]) -> float:
    return statistics.median(values)


def print_report(args, results: dict, machine: dict, versions: dict, ffcv_info: Optional[dict],
                 n_images: int, warm: tuple[int, float]) -> None:
    writers = [w for w in ("ffcv", "fastdata", "fastdata --reencode") if w in
               {k[1] for k in results}]
    print("## .beton writer throughput: fastdata vs FFCV\n")
    print(f"- machine: {machine['cores']} cores usable ({machine['cpu_count']} online), "
          f"{machine['cpu']}, {machine['mem']}, {machine['os']}")
    if machine.get("load_before") and machine.get("load_after"):
        print(f"- load average (1/5/15 min) before the runs: "
              f"{'/'.join(f'{x:.1f}' for x in machine['load_before'])}, after: "
              f"{'/'.join(f'{x:.1f}' for x in machine['load_after'])} (other work on the "
              f"machine makes timings noisy)")
    others = [x for r in results.values() for x in r.get("others_cores", [])]
    if others:
        print(f"- other processes kept {statistics.mean(others):.2f} cores busy on average during "
              f"the runs (max {max(others):.2f} in one run; of {machine['cores']})")
    print("- fastdata: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    if ffcv_info:
        print("- FFCV side: " + ", ".join(f"{k} {ffcv_info[k]}" for k in
                                          ("ffcv", "python", "numpy", "opencv", "pillow", "torch")
                                          if k in ffcv_info))
    print(f"- data: {os.path.join(args.data, args.split)}, {n_images} images "
          f"({warm[0] / 1e6:.0f} MB, page cache warmed in {warm[1]:.1f} s)")
    print(f"- settings: workers {args.workers}, max_resolution {args.max_resolution}, "
          f"jpeg_quality {args.jpeg_quality}, compress_probability {args.compress_probability}, "
          f"repeat {args.repeat} (median), runs interleaved ffcv / fastdata / fastdata --reencode")
    print()
    has_ffcv = "ffcv" in writers
    header = ["mode", "writer", "images", "seconds", "img/s", "CPU ms/img", "file MB", "data MB"]
    if has_ffcv:
        header += ["img/s vs FFCV", "CPU vs FFCV", "size vs FFCV"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|")
    for mode in args.modes:
        base = results.get((mode, "ffcv"))
        base_rate = base and base["n"] / median(base["seconds"])
        base_size = base and median(base["size"])
        base_cpu = base and median(base["cpu_seconds"]) / base["n"]
        for writer in writers:
            r = results[(mode, writer)]
            secs = median(r["seconds"])
            rate = r["n"] / secs
            size = median(r["size"])
            cpu = median(r["cpu_seconds"]) / r["n"]
            row = [mode, writer, str(r["n"]), f"{secs:.1f}", f"{rate:.0f}", f"{cpu * 1e3:.2f}",
                   f"{size / 1e6:.0f}", f"{median(r['data']) / 1e6:.0f}"]
            if has_ffcv:
                row += [f"{rate / base_rate:.2f}x", f"{cpu / base_cpu:.2f}x",
                        f"{size / base_size:.2f}x"]
            print("| " + " | ".join(row) + " |")
    print()
    print("Notes:")
    print("- file MB: the .beton file (whole pages of 8 MiB); data MB: the stored image "
          "bytes (allocation table sizes), which do not move in page steps; size vs FFCV is "
          "file MB.")
    print("- CPU ms/img: user+system CPU time of the writer's processes (all threads and "
          "worker processes) per image, over the same span as its seconds; it moves less than "
          "wall time when other work shares the cores. CPU vs FFCV: below 1 is less CPU.")
    print("- fastdata seconds: wall clock around `python -m fastdata.cli write imagenet --quiet`, "
          "so interpreter start, folder scan and the final fsync are included.")
    inner = []
    for mode in args.modes:
        for writer in ("fastdata", "fastdata --reencode"):
            if (mode, writer) in results:
                r = results[(mode, writer)]
                inner.append(f"{mode}/{writer} {median(r['inner_seconds']):.1f} s")
    if inner:
        print("- fastdata's own in-process write time (its report): " + "; ".join(inner) + ".")
    if has_ffcv:
        ffcv_rows = [results[(m, "ffcv")] for m in args.modes]
        imports = median([x for r in ffcv_rows for x in r["import_seconds"]])
        walls = "; ".join(f"{m} {median(results[(m, 'ffcv')]['wall']):.1f} s"
                          for m in args.modes)
        fsyncs = "; ".join(f"{m} {median(results[(m, 'ffcv')]['fsync_seconds']):.1f} s"
                           for m in args.modes)
        print("- FFCV seconds: measured inside its script from creating the DatasetWriter to the "
              "end of from_indexed_dataset (as ffcv-imagenet's write_imagenet.py, "
              "chunksize 100); interpreter start and imports (torch, numba) took "
              f"{imports:.1f} s more per run, whole process wall: {walls}.")
        print(f"- FFCV does not fsync; an fsync right after its write took {fsyncs} (not in "
              "its seconds; fastdata's seconds include its own fsync).")
        print("- FFCV's proportion mode draws with an unseeded np.random, so its file size "
              "varies a little from run to run; fastdata's draw is seeded per sample index.")
    else:
        print(f"- FFCV omitted: no FFCV interpreter (pass --ffcv-python or set "
              f"FASTDATA_FFCV_PYTHON to a python that can `import ffcv`).")
    print("- `fastdata` stores a source JPEG that needs no resize as it is (no second "
          "generation of loss, no encode); `fastdata --reencode` re-encodes every JPEG at "
          "jpeg_quality like FFCV.")


def main(argv=None) -> int:
    args = parse_args(argv)
    root = os.path.join(args.data, args.split)
    if not os.path.isdir(args.data):
        print(f"bench/write.py: error: --data {args.data} is not a folder", file=sys.stderr)
        return 2
    if not os.path.isdir(root):
        print(f"bench/write.py: error: {args.data} has no '{args.split}' folder (expected "
              f"{root}/<class>/<images>)", file=sys.stderr)
        return 2
    own_dir = args.out_dir is None
    out_dir = tempfile.mkdtemp(prefix="fastdata-bench-write-") if own_dir else args.out_dir
    script = None
    try:
        if not own_dir:
            os.makedirs(out_dir, exist_ok=True)
        try:
            paths = list_images(root, args.limit)
        except ValueError as err:
            raise BenchError(str(err)) from None
        ffcv_info = probe_ffcv(args.ffcv_python) if args.ffcv_python else None
        script = FFCV_SCRIPT
        print(f"warming the page cache: {len(paths)} files ...", file=sys.stderr)
        warm = warm_page_cache(paths)
        machine = {"cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                   else os.cpu_count(), "cpu_count": os.cpu_count(), "cpu": cpu_model(),
                   "mem": f"{mem_total_gib() or 0:.0f} GiB RAM",
                   "os": f"{platform.system()} {platform.release()}"}
        versions = fastdata_versions()
        machine["load_before"] = os.getloadavg() if hasattr(os, "getloadavg") else None

        results: dict = {}

        def record(key, res):
            slot = results.setdefault(key, {"n": res["n"]})
            if slot["n"] != res["n"]:
                raise BenchError(f"{key}: wrote {res['n']} images, earlier {slot['n']}")
            for k, v in res.items():
                if isinstance(v, (int, float)) and k != "n":
                    slot.setdefault(k, []).append(v)
            if "ffcv" in res:
                ffcv_info.update({k: res[k] for k in ("ffcv", "numpy", "opencv", "pillow",
                                                      "torch", "python")})

        for rep in range(args.repeat):
            for mode in args.modes:
                runs = ([("ffcv", None)] if ffcv_info else []) + \
                    [("fastdata", False), ("fastdata --reencode", True)]
                for writer, reencode in runs:
                    out = os.path.join(out_dir, f"{writer.replace(' --', '-')}_{mode}.beton")
                    remove(out)
                    print(f"[{rep + 1}/{args.repeat}] {mode}: {writer} ...", file=sys.stderr,
                          end=" ", flush=True)
                    busy0, own0, t0 = cpu_busy_seconds(), own_cpu_seconds(), time.time()
                    if writer == "ffcv":
                        res = run_ffcv(args, script, root, out, mode)
                    else:
                        res = run_fastdata(args, out, mode, reencode)
                    busy1, own1, t1 = cpu_busy_seconds(), own_cpu_seconds(), time.time()
                    if busy0 is not None and busy1 is not None and t1 > t0:
                        # cores kept busy by other processes while this run went on
                        res["others_cores"] = max(0.0, (busy1 - busy0) - (own1 - own0)) / (t1 - t0)
                    print(f"{res['n']} images in {res['seconds']:.1f} s, "
                          f"{res['size'] / 1e6:.0f} MB", file=sys.stderr, flush=True)
                    record((mode, writer), res)
                    if own_dir or rep < args.repeat - 1:
                        remove(out)
        machine["load_after"] = os.getloadavg() if hasattr(os, "getloadavg") else None
        print_report(args, results, machine, versions, ffcv_info, len(paths), warm)
        return 0
    except BenchError as err:
        print(f"bench/write.py: error: {err}", file=sys.stderr)
        return 1
    finally:
        if own_dir:
            shutil.rmtree(out_dir, ignore_errors=True)
        elif script is not None:
            remove(script)


if __name__ == "__main__":
    sys.exit(main())
