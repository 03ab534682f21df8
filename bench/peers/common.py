"""What every loader child of bench/loader.py shares (stdlib + psutil/resource only, so that it
runs under any peer's interpreter).

A child is started as ``python <peer>_loader.py '<json config>'`` (pinned by the parent with
taskset) and prints one line ``RESULT {json}`` at the end.  Config keys:

- mode: "throughput" or "first_batch"
- pipeline: "train" (RandomResizedCrop 224 + flip) or "val" (Resize 256 + CenterCrop 224)
- path: the .beton file (fastdata, ffcv) or the image folder root holding class folders
- threads, batch_size, seconds, warmup_batches, seed
"""
from __future__ import annotations

import json
import os
import resource
import sys
import time
import traceback

T_PROCESS_START = time.perf_counter()


def config() -> dict:
    return json.loads(sys.argv[1])


def emit(result: dict) -> None:
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()


def tree_cpu_seconds() -> float:
    """user+sys CPU seconds of this process, its live descendants and its reaped children."""
    try:
        import psutil
    except ImportError:
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    me = psutil.Process()
    t = me.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in me.children(recursive=True):
        try:
            ct = child.cpu_times()
            total += ct.user + ct.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def pinned_cores_busy() -> float | None:
    """Busy (non-idle, non-iowait) CPU seconds so far of the cores this process may run on,
    from /proc/stat: with the tree's own CPU time it tells how much other processes took."""
    try:
        cores = {f"cpu{c}" for c in os.sched_getaffinity(0)}
        hz = os.sysconf("SC_CLK_TCK")
        busy = 0
        with open("/proc/stat") as f:
            for line in f:
                parts = line.split()
                if parts and parts[0] in cores:
                    ticks = [int(x) for x in parts[1:9]]
                    busy += sum(ticks) - ticks[3] - ticks[4]
        return busy / hz
    except (OSError, ValueError, AttributeError):
        return None


def describe(batch) -> dict:
    """Shape, dtype and mean of a batch's images (a sanity check that pixels were produced)."""
    try:
        import numpy as np
        arr = np.asarray(batch)
        return {"shape": list(arr.shape), "dtype": str(arr.dtype),
                "mean": float(arr[: min(8, len(arr))].mean())}
    except Exception as err:   # pragma: no cover - diagnostics only
        return {"error": repr(err)}


def throughput(make_batches, cfg: dict, extra: dict | None = None) -> dict:
    """Run ``make_batches()`` -> iterator of (n_images, images) until the window is over.

    Warm-up: ``warmup_batches`` batches (at least one).  Then the clock starts (t0) and every
    batch arriving within ``seconds`` of t0 is counted; img/s = counted images / (arrival of
    the last counted batch - t0).  The CPU time of the process tree is read at t0 and at the
    arrival of the first batch past the window (t_end); img per CPU-second = images arrived
    in [t0, t_end] / CPU seconds in [t0, t_end]."""
    seconds = float(cfg["seconds"])
    t_create = time.perf_counter()
    batches = make_batches()
    first = None
    sample = None
    for i in range(max(1, int(cfg.get("warmup_batches", 1)))):
        n, images = next(batches)
        if first is None:
            first = time.perf_counter()
            sample = describe(images)
    t0 = time.perf_counter()
    cpu0 = tree_cpu_seconds()
    sys0 = pinned_cores_busy()
    counted_images = counted_batches = 0
    t_last = t0
    while True:
        n, _ = next(batches)
        t = time.perf_counter()
        if t - t0 > seconds:
            break
        counted_images += n
        counted_batches += 1
        t_last = t
    t_end = t
    cpu1 = tree_cpu_seconds()
    sys1 = pinned_cores_busy()
    images_to_end = counted_images + n
    result = {
        "images": counted_images, "batches": counted_batches,
        "window_s": t_last - t0,
        "img_s": counted_images / (t_last - t0) if counted_batches else 0.0,
        "cpu_s": cpu1 - cpu0, "cpu_window_s": t_end - t0, "images_cpu_window": images_to_end,
        "img_per_cpu_s": images_to_end / (cpu1 - cpu0) if cpu1 > cpu0 else None,
        "cores_busy": (cpu1 - cpu0) / (t_end - t0),
        "others_cores_busy": None if sys0 is None else
        max(0.0, (sys1 - sys0) - (cpu1 - cpu0)) / (t_end - t0),
        "first_batch_s": first - t_create, "warmup_s": t0 - t_create,
        "startup_s": t_create - T_PROCESS_START,
        "sample": sample,
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "loadavg": os.getloadavg(),
    }
    result.update(extra or {})
    return result


def run(main) -> None:
    """Call main(cfg) -> dict and emit it; on an exception emit the traceback."""
    cfg = config()
    try:
        result = main(cfg)
        result["ok"] = True
    except BaseException:   # report everything, the parent decides
        result = {"ok": False, "error": traceback.format_exc()}
    emit(result)
    sys.stdout.flush()
    sys.stderr.flush()
    # Some loaders leave threads or worker processes behind: do not wait for them.
    os._exit(0)


def measure_loader(make_loader, cfg: dict, extra: dict) -> dict:
    """The measurement every torch-style peer shares: in "first_batch" mode the time from
    creating the loader to its first (images, labels) batch; otherwise throughput over epochs."""
    if cfg["mode"] == "first_batch":
        t0 = time.perf_counter()
        loader = make_loader(cfg)
        t1 = time.perf_counter()
        images, labels = next(iter(loader))
        t2 = time.perf_counter()
        return dict(extra, create_s=t1 - t0, first_batch_s=t2 - t0,
                    process_to_first_s=t2 - T_PROCESS_START,
                    sample=describe(images.numpy()))

    def batches():
        loader = make_loader(cfg)
        while True:
            for images, labels in loader:
                yield len(images), images.numpy()

    return throughput(batches, cfg, extra)
