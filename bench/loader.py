"""Loader throughput: fastdata vs FFCV 1.0.2, DALI (CPU) and torchvision (Pillow, Pillow-SIMD).

    python bench/loader.py --data DIR --threads 1,2 --repeat 3 --seconds 20 \\
        --ffcv-python FFCV_VENV/bin/python --dali-python DALI_VENV/bin/python \\
        --torch-python TORCH_VENV/bin/python --simd-python SIMD_VENV/bin/python
    python bench/loader.py --data DIR --quick            # debugging

``DIR`` is an ImageNet-style folder (``DIR/train/<class>/<images>``).  Each peer runs under an
interpreter of its own, given by ``--<peer>-python`` or the environment variable
``FASTDATA_<PEER>_PYTHON`` (for example ``FASTDATA_FFCV_PYTHON``); a peer with neither is skipped
with a note.  ``bench/setup_peers.sh DIR`` builds all four (FFCV alone: ``.ci/ffcv_venv.sh``).
Without FFCV the two .beton files are written by fastdata's writer instead (re-encoding as FFCV
does), with a note.

Two pipelines, both with uint8 output in batches of 256:

- train: RandomResizedCrop 224 (scale 0.08-1, ratio 3/4-4/3, antialiased) + horizontal flip,
  random order;
- val: Resize(256) + CenterCrop(224) (FFCV's CenterCrop ratio 224/256), sequential order.
  It runs on the same 10,000 train images (the 1,000-image val split is a one-second epoch,
  where epoch start-up would dominate).

Loaders (each in its own interpreter; a missing one is skipped with a note):

- fastdata ``Loader`` (RandomResizedCrop/CenterCrop, RandomHorizontalFlip, IntDecoder) and
- FFCV's ``Loader`` (RandomResizedCropRGBImageDecoder/CenterCropRGBImageDecoder,
  RandomHorizontalFlip, ToTensor; os_cache=True),
  both on the same two .beton files written once by FFCV's DatasetWriter under ``--work-dir``:
  FFCV's ResNet-50 recipe (proportion mode, max_resolution 500, compress_probability 0.5,
  quality 90) and all-JPEG (jpg mode, max_resolution 500, quality 90);
- DALI on the CPU (device_id=None): readers.file + decoders.image_random_crop + resize + flip
  (val: decoders.image + resize_shorter 256 + crop 224), from the JPEG folder;
- torchvision ImageFolder + DataLoader (transforms.v2 on PIL images + PILToTensor,
  persistent workers), with Pillow and with Pillow-SIMD, from the JPEG folder.

Each measurement is a fresh subprocess pinned with ``taskset`` to the first N cores, given N
threads/workers.  It warms up (``--warmup-batches``, default: one per thread/worker, so every
DataLoader worker has delivered once), then counts the batches that arrive within ``--seconds``;
img/s = counted images / (arrival of the last counted batch - start of the window).  CPU time is
the user+sys time of the child's whole process tree (psutil) over the window; img/CPU-s is images
per CPU-second.  Runs are interleaved: each repeat runs every (loader, file, pipeline, threads)
once; tables give the median (and min, max) over repeats.  The child also reads /proc/stat:
a run during which other processes took more than ``--max-others`` cores' worth of CPU on its
own cores is run again (``--retries``), and the least contended try counts.  Loaders iterate
epoch after epoch, so epoch boundaries (every 2 to 35 s here) fall inside the windows as they
would in training.

First-batch latency (skipped with ``--no-first-batch``): time from creating the Loader to the
first batch, fresh process; fastdata cold (an empty NUMBA_CACHE_DIR) and warm (the same
directory, now filled); FFCV twice (it compiles its pipeline on every start).

Outputs: markdown tables on stdout, ``loader.json`` (every raw number) and ``loader.png`` (img/s
per core) in ``--out-dir`` (``loader-quick.*`` with --quick).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Optional

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PEERS_DIR = os.path.join(HERE, "peers")

FILES = {
    # key: (label, FFCV RGBImageField arguments)
    "proportion": ("proportion (FFCV RN-50: max_res 500, p=0.5, q90)",
                   {"mode": "proportion", "max_resolution": 500, "compress_probability": 0.5,
                    "jpeg_quality": 90}),
    "jpg": ("jpg (all JPEG, max_res 500, q90)",
            {"mode": "jpg", "max_resolution": 500, "compress_probability": 0.5,
             "jpeg_quality": 90}),
}

# Configurations, in table order: (name, loader key, file key or None for the JPEG folder).
CONFIGS = [
    ("fastdata/proportion", "fastdata", "proportion"),
    ("fastdata/jpg", "fastdata", "jpg"),
    ("ffcv/proportion", "ffcv", "proportion"),
    ("ffcv/jpg", "ffcv", "jpg"),
    ("dali-cpu", "dali", None),
    ("torch-pil", "torch", None),
    ("torch-pillow-simd", "simd", None),
]
SCRIPTS = {"fastdata": "fastdata_loader.py", "ffcv": "ffcv_loader.py", "dali": "dali_loader.py",
           "torch": "torch_loader.py", "simd": "torch_loader.py"}

# The peers' interpreters: what each must import, and the variable that names it by default.
PEER_NEEDS = {"ffcv": "ffcv 1.0.2", "dali": "nvidia.dali", "torch": "torch and torchvision",
              "simd": "torchvision over Pillow-SIMD"}
PEER_ENV = {kind: f"FASTDATA_{kind.upper()}_PYTHON" for kind in PEER_NEEDS}

PROBES = {
    "fastdata": "import json, sys, importlib.metadata as md, fastdata, torch, numba, numpy\n"
                "print(json.dumps({'fastdata': fastdata.__version__, 'from': fastdata.__file__,"
                " 'torch': torch.__version__,"
                " 'numba': numba.__version__, 'numpy': numpy.__version__,"
                " 'python': sys.version.split()[0]}))",
    "ffcv": "import json, sys, importlib.metadata as md, ffcv, torch, numba, numpy, cv2, PIL\n"
            "print(json.dumps({'ffcv': md.version('ffcv'), 'torch': torch.__version__,"
            " 'numba': numba.__version__, 'numpy': numpy.__version__, 'opencv': cv2.__version__,"
            " 'pillow': PIL.__version__, 'python': sys.version.split()[0]}))",
    "dali": "import json, sys, nvidia.dali as d, numpy\n"
            "print(json.dumps({'dali': d.__version__, 'numpy': numpy.__version__,"
            " 'python': sys.version.split()[0]}))",
    "torch": "import json, sys, torch, torchvision, PIL, numpy\n"
             "print(json.dumps({'torch': torch.__version__, 'torchvision': torchvision.__version__,"
             " 'pillow': PIL.__version__, 'numpy': numpy.__version__,"
             " 'python': sys.version.split()[0]}))",
}
PROBES["simd"] = PROBES["torch"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\nTwo pipelines")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, metavar="DIR",
                   help="ImageNet-style root holding train/<class>/<images>")
    p.add_argument("--split", default="train", help="image folder under --data (default train)")
    p.add_argument("--work-dir", default=os.path.join(HERE, "out", "loader-work"), metavar="DIR",
                   help="where the .beton files are written once and reused (default "
                        "bench/out/loader-work in this repository)")
    p.add_argument("--out-dir", default=os.path.join(HERE, "out"), metavar="DIR")
    p.add_argument("--threads", default="1,2", help="comma-separated thread/worker counts")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--seconds", type=float, default=20.0, help="timed window per run")
    p.add_argument("--warmup-batches", type=int, default=None,
                   help="batches before the window (default: the thread count)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--pipelines", default="train,val")
    p.add_argument("--loaders", default=",".join(c[0] for c in CONFIGS),
                   help="comma-separated configurations (default: all): "
                        + ", ".join(c[0] for c in CONFIGS))
    p.add_argument("--max-others", type=float, default=0.2, metavar="CORES",
                   help="a run during which other processes took more than this much CPU "
                        "(cores) on its cores is contended: it is run again (default 0.2)")
    p.add_argument("--retries", type=int, default=2,
                   help="extra tries of a contended run; the least contended counts (default 2)")
    p.add_argument("--no-first-batch", dest="first_batch", action="store_false",
                   help="skip the first-batch latency runs")
    p.add_argument("--write-workers", type=int, default=2, help="FFCV writer processes")
    p.add_argument("--quick", action="store_true",
                   help="debug run: 3 s windows, 1 repeat (unless given), one first-batch file")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="seconds a child may take beyond its window")
    p.add_argument("--no-snapshot", dest="snapshot", action="store_false",
                   help="import fastdata from the working tree in every run, instead of from a "
                        "copy taken at the start (the copy keeps concurrent edits out)")
    p.add_argument("--fastdata-python", default=sys.executable, metavar="PATH",
                   help="a python with fastdata's dependencies (default: this one); it imports "
                        "fastdata from this repository")
    for kind, needs in PEER_NEEDS.items():
        p.add_argument(f"--{kind}-python", default=os.environ.get(PEER_ENV[kind]), metavar="PATH",
                       help=f"a python that can import {needs} (default: ${PEER_ENV[kind]}); "
                            f"without one, {kind} is skipped")
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_args(argv)
    if args.quick:
        if "--seconds" not in argv:
            args.seconds = 3.0
        if "--repeat" not in argv:
            args.repeat = 1
    args.threads = [int(t) for t in args.threads.split(",") if t.strip()]
    args.pipelines = [x.strip() for x in args.pipelines.split(",") if x.strip()]
    args.loaders = [x.strip() for x in args.loaders.split(",") if x.strip()]
    known = {c[0] for c in CONFIGS}
    if set(args.loaders) - known:
        p.error(f"--loaders: unknown {sorted(set(args.loaders) - known)}")
    if set(args.pipelines) - {"train", "val"}:
        p.error("--pipelines: train and/or val")
    if not args.threads or min(args.threads) < 1 or args.repeat < 1 or args.seconds <= 0:
        p.error("--threads, --repeat and --seconds must be positive")
    cores = len(os.sched_getaffinity(0))
    if max(args.threads) > cores:
        p.error(f"--threads {max(args.threads)} > the {cores} cores this process may use")
    return args


# -- machine and versions ------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    info = {"cpu_model": cpu_model(), "os_cpu_count": os.cpu_count(),
            "usable_cores": sorted(os.sched_getaffinity(0)),
            "platform": platform.platform(), "python": sys.version.split()[0]}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    info["mem_gib"] = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    try:
        flags = open("/proc/cpuinfo").read().split("flags", 1)[1].split("\n", 1)[0]
        info["simd"] = [f for f in ("avx2", "avx512f", "amx_tile") if f" {f}" in flags]
    except (OSError, IndexError):
        pass
    return info


def repo_state() -> dict:
    def git(*cmd):
        try:
            return subprocess.run(["git", "-C", REPO, *cmd], capture_output=True, text=True,
                                  timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "dirty_package_files": [line[3:] for line in git("status", "--porcelain").splitlines()
                                    if line[3:].startswith("fastdata/")]}


def snapshot_package(work_dir: str) -> tuple[str, str]:
    """Copy the fastdata package to a fresh folder; (folder to put on PYTHONPATH, content hash)."""
    import hashlib
    root = tempfile.mkdtemp(prefix="fastdata-snapshot-", dir=work_dir)
    shutil.copytree(os.path.join(REPO, "fastdata"), os.path.join(root, "fastdata"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    digest = hashlib.sha256()
    for dirpath, dirs, names in sorted(os.walk(os.path.join(root, "fastdata"))):
        dirs.sort()
        for name in sorted(names):
            with open(os.path.join(dirpath, name), "rb") as f:
                digest.update(name.encode() + b"\0" + f.read())
    return root, digest.hexdigest()[:12]


def probe(kind: str, exe: str, pythonpath: Optional[str] = None
          ) -> tuple[Optional[dict], Optional[str]]:
    """Versions from a peer's interpreter, or why it is unusable."""
    if not exe:
        return None, f"no interpreter given (--{kind}-python or ${PEER_ENV[kind]})"
    if not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
        return None, f"no interpreter at {exe}"
    try:
        env = dict(os.environ)
        if pythonpath:
            env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
        proc = subprocess.run([exe, "-c", PROBES[kind]], capture_output=True, text=True,
                              timeout=300, cwd="/", env=env)
    except subprocess.TimeoutExpired:
        return None, f"{exe}: version probe timed out"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return None, f"{exe} cannot import what it needs: {last}"
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    if kind == "simd" and ".post" not in info.get("pillow", ""):
        return None, f"{exe}: PIL {info.get('pillow')} is not Pillow-SIMD (no .postN version)"
    return info, None


# -- data ----------------------------------------------------------------------------------------
def warm_page_cache(paths: list[str]) -> tuple[int, float]:
    t = time.perf_counter()
    total = 0
    buf = bytearray(1 << 22)
    for path in paths:
        try:
            with open(path, "rb", buffering=0) as f:
                while True:
                    n = f.readinto(buf)
                    if not n:
                        break
                    total += n
        except OSError:
            pass
    return total, time.perf_counter() - t


def image_files(root: str) -> list[str]:
    out = []
    for dirpath, _, names in os.walk(root):
        out += [os.path.join(dirpath, n) for n in names]
    return out


def ensure_betons(args, versions: dict, notes: list[str]) -> dict:
    """The two .beton files (key -> path), written once by FFCV's DatasetWriter."""
    os.makedirs(args.work_dir, exist_ok=True)
    root = os.path.join(args.data, args.split)
    paths = {}
    for key, (label, spec) in FILES.items():
        name = f"ffcv-{spec['mode']}-r{spec['max_resolution']}" + \
            (f"-p{spec['compress_probability']}" if spec["mode"] == "proportion" else "") + \
            f"-q{spec['jpeg_quality']}-{args.split}.beton"
        path = os.path.join(args.work_dir, name)
        meta_path = path + ".json"
        if os.path.exists(path) and os.path.exists(meta_path):
            meta = json.load(open(meta_path))
            print(f"- reusing {path} ({os.path.getsize(path) / 1e6:,.0f} MB, "
                  f"written by {meta.get('writer')})")
            paths[key] = path
            continue
        tmp = path + ".tmp"
        if os.path.exists(tmp):
            os.remove(tmp)
        if "ffcv" in versions:
            cfg = dict(spec, root=root, out=tmp, workers=args.write_workers)
            cmd = [args.ffcv_python, os.path.join(PEERS_DIR, "ffcv_write.py"), json.dumps(cfg)]
            writer = f"ffcv {versions['ffcv'].get('ffcv')} DatasetWriter"
        else:
            cmd = [args.fastdata_python, "-m", "fastdata.cli", "write", "imagenet", "--data-dir",
                   args.data, "--split", args.split, "--out", tmp, "--write-mode", spec["mode"],
                   "--max-resolution", str(spec["max_resolution"]), "--jpeg-quality",
                   str(spec["jpeg_quality"]), "--compress-probability",
                   str(spec["compress_probability"]), "--workers", str(args.write_workers),
                   "--quiet", "--reencode"]
            writer = "fastdata writer --reencode (FFCV unavailable)"
            notes.append(f"{name} was written by fastdata's writer (--reencode), not FFCV's, "
                         f"as no FFCV interpreter was usable")
        print(f"- writing {path} with {writer} ...", flush=True)
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        if proc.returncode != 0 or not os.path.exists(tmp):
            print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
            notes.append(f"writing {name} failed: loaders on it are skipped")
            continue
        seconds = time.perf_counter() - t
        os.replace(tmp, path)
        with open(meta_path, "w") as f:
            json.dump({"writer": writer, "spec": spec, "root": root, "seconds": seconds,
                       "bytes": os.path.getsize(path)}, f)
        print(f"  {os.path.getsize(path) / 1e6:,.0f} MB in {seconds:.1f} s")
        paths[key] = path
    return paths


# -- running children ----------------------------------------------------------------------------
def taskset(threads: int) -> list[str]:
    cores = sorted(os.sched_getaffinity(0))[:threads]
    if shutil.which("taskset") is None:
        return []
    return ["taskset", "-c", ",".join(str(c) for c in cores)]


def run_child(args, kind: str, cfg: dict, threads: int, env_extra: Optional[dict] = None,
              timeout: Optional[float] = None) -> dict:
    exe = getattr(args, f"{kind}_python")
    cmd = taskset(threads) + [exe, os.path.join(PEERS_DIR, SCRIPTS[kind]), json.dumps(cfg)]
    env = dict(os.environ, **(env_extra or {}))
    if kind == "fastdata":
        env["PYTHONPATH"] = (getattr(args, "fastdata_root", None) or REPO) + os.pathsep + \
            env.get("PYTHONPATH", "")
    load_before = os.getloadavg()
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO,
                              timeout=timeout or (args.seconds + args.timeout))
    except subprocess.TimeoutExpired as err:
        return {"ok": False, "error": f"timed out after {err.timeout:.0f} s",
                "stderr": (err.stderr or b"")[-2000:].decode(errors="replace")
                if isinstance(err.stderr, bytes) else str(err.stderr)[-2000:]}
    wall = time.perf_counter() - t
    result = None
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[7:])
    if result is None:
        result = {"ok": False, "error": f"no result (exit {proc.returncode})"}
    if not result.get("ok"):
        result["stderr"] = proc.stderr[-3000:]
    result.update(process_wall_s=wall, loadavg_before=load_before, loadavg_after=os.getloadavg())
    return result


# -- statistics and printing ---------------------------------------------------------------------
def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=0, suffix=""):
    if v is None:
        return "-"
    return f"{v:,.{digits}f}{suffix}"


def summarise(runs: list[dict], threads: int) -> Optional[dict]:
    ok = [r for r in runs if r.get("ok")]
    if not ok:
        return None
    rates = [r["img_s"] for r in ok]
    return {"n": len(ok), "failed": len(runs) - len(ok), "median": statistics.median(rates),
            "min": min(rates), "max": max(rates),
            "per_core": statistics.median(rates) / threads,
            "per_cpu_s": med([r.get("img_per_cpu_s") for r in ok]),
            "cores_busy": med([r.get("cores_busy") for r in ok]),
            "others_busy": med([r.get("others_cores_busy") for r in ok])}


def print_tables(args, configs, results, summary) -> None:
    for pipeline in args.pipelines:
        title = {"train": "train: RandomResizedCrop 224 + flip, random order",
                 "val": "val: Resize 256 + CenterCrop 224 (ratio 224/256), sequential order"}
        print(f"\n### {title[pipeline]} (uint8, batch {args.batch_size}; "
              f"{args.repeat} interleaved runs of {args.seconds:g} s)\n")
        print("| loader | file | threads | img/s median | min | max | img/s/core | img/CPU-s "
              "| cores busy | others' load on its cores | fastdata/proportion ÷ this (per core) "
              "| fastdata/jpg ÷ this (per core) |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for name, kind, file_key in configs:
            for t in args.threads:
                s = summary.get((name, pipeline, t))
                file_label = file_key or "JPEG folder"
                if s is None:
                    runs = results.get((name, pipeline, t), [])
                    why = "failed" if runs else "not run"
                    print(f"| {name.split('/')[0]} | {file_label} | {t} | {why} "
                          f"| | | | | | | | |")
                    continue
                ratios = []
                for ref in ("fastdata/proportion", "fastdata/jpg"):
                    r = summary.get((ref, pipeline, t))
                    ratios.append(fmt(r["per_core"] / s["per_core"], 2, "x")
                                  if r and s["per_core"] else "-")
                fail = f" ({s['failed']} failed)" if s["failed"] else ""
                print(f"| {name.split('/')[0]} | {file_label} | {t} | {fmt(s['median'])}{fail} "
                      f"| {fmt(s['min'])} | {fmt(s['max'])} | {fmt(s['per_core'])} "
                      f"| {fmt(s['per_cpu_s'])} | {fmt(s['cores_busy'], 2)} "
                      f"| {fmt(s['others_busy'], 2)} "
                      f"| {ratios[0]} | {ratios[1]} |")
        # Same-file comparisons, spelled out.
        lines = []
        for t in args.threads:
            for f in ("proportion", "jpg"):
                a = summary.get((f"fastdata/{f}", pipeline, t))
                b = summary.get((f"ffcv/{f}", pipeline, t))
                if a and b:
                    lines.append(f"{t} thread{'s' if t > 1 else ''}, {f}: fastdata "
                                 f"{a['median']:,.0f} vs FFCV {b['median']:,.0f} img/s = "
                                 f"{a['median'] / b['median']:.2f}x (img/CPU-s "
                                 f"{fmt(a['per_cpu_s'])} vs {fmt(b['per_cpu_s'])})")
        if lines:
            print("\nSame bytes, fastdata vs FFCV: " + "; ".join(lines) + ".")
        if len(args.threads) > 1:
            lo, hi = min(args.threads), max(args.threads)
            parts = []
            for name, _, _ in configs:
                a, b = summary.get((name, pipeline, lo)), summary.get((name, pipeline, hi))
                if a and b:
                    parts.append(f"{name} {b['median'] / a['median']:.2f}x")
            print(f"\nScaling {hi} vs {lo} thread(s) (img/s ratio, ideal {hi / lo:.0f}x): "
                  + ", ".join(parts) + ".")


def print_first_batch(first: list[dict]) -> None:
    if not first:
        return
    print("\n### First-batch latency (fresh process; Loader() to first batch)\n")
    print("| loader | file | pipeline | threads | run | import s | Loader() s "
          "| Loader() -> first batch s | interpreter start -> first batch s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in first:
        res = r["result"]
        if not res.get("ok"):
            print(f"| {r['loader']} | {r['file']} | {r['pipeline']} | {r['threads']} "
                  f"| {r['run']} | failed | | | |")
            continue
        print(f"| {r['loader']} | {r['file']} | {r['pipeline']} | {r['threads']} | {r['run']} "
              f"| {res['import_s']:.2f} | {res['create_s']:.2f} | {res['first_batch_s']:.2f} "
              f"| {res['process_to_first_s']:.2f} |")


def chart(args, configs, summary, path: str) -> Optional[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(2, len(args.pipelines), figsize=(7 * len(args.pipelines), 9),
                             squeeze=False)
    names = [c[0] for c in configs]
    width = 0.8 / len(args.threads)
    titles = {"train": "train: RandomResizedCrop 224 + flip",
              "val": "val: Resize 256 + CenterCrop 224"}
    for row, metric in enumerate(("per_core", "per_cpu_s")):
        for ax, pipeline in zip(axes[row], args.pipelines):
            for j, t in enumerate(args.threads):
                xs, hs, lo, hi = [], [], [], []
                for i, name in enumerate(names):
                    s = summary.get((name, pipeline, t))
                    if not s or s.get(metric) is None:
                        continue
                    xs.append(i + (j - (len(args.threads) - 1) / 2) * width)
                    hs.append(s[metric])
                    lo.append(max(0.0, s["per_core"] - s["min"] / t) if row == 0 else 0)
                    hi.append(max(0.0, s["max"] / t - s["per_core"]) if row == 0 else 0)
                bars = ax.bar(xs, hs, width, yerr=[lo, hi] if row == 0 else None, capsize=2,
                              label=f"{t} thread{'s' if t > 1 else ''}")
                ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=2)
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
            ax.set_ylabel("images/s per core (median; bars: min-max)" if row == 0 else
                          "images per CPU-second (median)")
            ax.set_title(titles[pipeline], fontsize=10)
            ax.legend(fontsize=8)
            ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"uint8 batches of {args.batch_size}, {cpu_model()}, taskset to N cores",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# -- main ----------------------------------------------------------------------------------------
def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.time()
    load_start = os.getloadavg()
    machine = machine_info()
    notes: list[str] = []
    print("## Loader benchmark" + (" (--quick)" if args.quick else ""))
    print(f"\n- machine: {machine['cpu_model']}, {machine['os_cpu_count']} logical CPUs "
          f"(usable {machine['usable_cores']}), {machine.get('mem_gib')} GiB, "
          f"{machine['platform']}, SIMD {'/'.join(machine.get('simd', []))}")
    print("- load average at start (1/5/15 min): "
          + " / ".join(f"{x:.2f}" for x in load_start))
    state = repo_state()
    os.makedirs(args.work_dir, exist_ok=True)
    args.fastdata_root = None
    if args.snapshot:
        args.fastdata_root, state["snapshot_sha256"] = snapshot_package(args.work_dir)
        state["snapshot"] = args.fastdata_root
    print(f"- fastdata at {state['commit']}"
          + (f", uncommitted changes in {', '.join(state['dirty_package_files'])}"
             if state["dirty_package_files"] else "")
          + (f"; every run imports a copy taken now ({args.fastdata_root}, "
             f"content sha256 {state['snapshot_sha256']})" if args.snapshot else
             "; runs import the working tree as it is when they start"))

    versions, skipped = {}, {}
    for kind in ("fastdata", "ffcv", "dali", "torch", "simd"):
        info, why = probe(kind, getattr(args, f"{kind}_python"),
                          args.fastdata_root if kind == "fastdata" else None)
        if info:
            versions[kind] = info
        else:
            skipped[kind] = why
    for kind, info in versions.items():
        print(f"- {kind} ({getattr(args, f'{kind}_python')}): "
              + ", ".join(f"{k} {v}" for k, v in info.items()))
    for kind, why in skipped.items():
        print(f"- SKIPPED {kind}: {why}")
        notes.append(f"{kind} skipped: {why}")

    root = os.path.join(args.data, args.split)
    if not os.path.isdir(root):
        print(f"error: no image folder {root}", file=sys.stderr)
        return 2
    betons = ensure_betons(args, versions, notes)
    files = image_files(root)
    nbytes, secs = warm_page_cache(files + list(betons.values()))
    print(f"- page cache warmed: {len(files):,} images + {len(betons)} .beton files, "
          f"{nbytes / 1e9:.2f} GB read in {secs:.1f} s")

    configs = []
    for name, kind, file_key in CONFIGS:
        if name not in args.loaders:
            continue
        if kind not in versions:
            continue
        if file_key is not None and file_key not in betons:
            notes.append(f"{name} skipped: no .beton file")
            continue
        configs.append((name, kind, file_key))

    numba_cache = os.path.join(args.work_dir, "numba-cache")
    os.makedirs(numba_cache, exist_ok=True)
    results: dict = {}
    raw_runs = []
    n_runs = args.repeat * len(args.pipelines) * len(args.threads) * len(configs)
    print(f"- {n_runs} throughput runs ({args.repeat} repeats x {len(args.pipelines)} pipelines "
          f"x {len(args.threads)} thread counts x {len(configs)} loaders), {args.seconds:g} s "
          f"windows\n", flush=True)
    done = 0
    for rep in range(args.repeat):
        for pipeline in args.pipelines:
            for t in args.threads:
                for name, kind, file_key in configs:
                    path = betons[file_key] if file_key else root
                    cfg = {"mode": "throughput", "pipeline": pipeline, "path": path,
                           "threads": t, "batch_size": args.batch_size, "seconds": args.seconds,
                           "warmup_batches": args.warmup_batches or t, "seed": rep}
                    env = {"NUMBA_CACHE_DIR": numba_cache} if kind == "fastdata" else {}
                    attempts = []
                    for attempt in range(1 + max(0, args.retries)):
                        res = run_child(args, kind, cfg, t, env)
                        attempts.append(res)
                        others = res.get("others_cores_busy")
                        if not res.get("ok") or others is None or others <= args.max_others:
                            break
                        print(f"      {pipeline} {t}t {name}: contended (other processes took "
                              f"{others:.2f} cores of its {t}), {res['img_s']:,.0f} img/s"
                              + ("; running it again" if attempt < args.retries else ""),
                              flush=True)
                    ok = [a for a in attempts if a.get("ok")]
                    if ok:
                        res = min(ok, key=lambda a: a.get("others_cores_busy") or 0.0)
                    res = dict(res, tries=len(attempts),
                               other_tries=[a for a in attempts if a is not res])
                    done += 1
                    results.setdefault((name, pipeline, t), []).append(res)
                    raw_runs.append({"loader": name, "pipeline": pipeline, "threads": t,
                                     "repeat": rep, "result": res})
                    if res.get("ok"):
                        msg = (f"{res['img_s']:8,.0f} img/s  {fmt(res.get('img_per_cpu_s'))} "
                               f"img/CPU-s  busy {res['cores_busy']:.2f}  first batch "
                               f"{res['first_batch_s']:.1f} s  sample {res['sample'].get('shape')}"
                               f" mean {res['sample'].get('mean', 0):.0f}")
                    else:
                        msg = "FAILED: " + res.get("error", "?").strip().splitlines()[-1]
                        print(res.get("error", ""), res.get("stderr", "")[-1500:],
                              file=sys.stderr)
                    print(f"[{done:3d}/{n_runs}] rep {rep} {pipeline:5s} {t}t {name:20s} {msg}  "
                          f"(load {res['loadavg_before'][0]:.1f})"
                          if "loadavg_before" in res else
                          f"[{done:3d}/{n_runs}] rep {rep} {pipeline:5s} {t}t {name:20s} {msg}",
                          flush=True)

    summary = {key: s for key, runs in results.items()
               if (s := summarise(runs, key[2])) is not None}

    first = []
    if args.first_batch:
        t = max(args.threads)
        file_keys = [k for k in ("proportion", "jpg") if k in betons and
                     any(c[2] == k and c[1] in ("fastdata", "ffcv") for c in configs)]
        if args.quick:
            file_keys = file_keys[:1]
        for file_key in file_keys:
            for pipeline in args.pipelines:
                mark = len(first)
                cfg = {"mode": "first_batch", "pipeline": pipeline, "path": betons[file_key],
                       "threads": t, "batch_size": args.batch_size, "seed": 0}
                if "fastdata" in versions and any(c[1] == "fastdata" for c in configs):
                    cache = tempfile.mkdtemp(prefix="numba-cold-", dir=args.work_dir)
                    for run in ("cold", "warm"):
                        res = run_child(args, "fastdata", cfg, t, {"NUMBA_CACHE_DIR": cache},
                                        timeout=args.timeout)
                        first.append({"loader": "fastdata", "file": file_key,
                                      "pipeline": pipeline, "threads": t,
                                      "run": f"{run} Numba cache", "result": res})
                    shutil.rmtree(cache, ignore_errors=True)
                if "ffcv" in versions and any(c[1] == "ffcv" for c in configs):
                    for run in ("1st process", "2nd process"):
                        res = run_child(args, "ffcv", cfg, t, timeout=args.timeout)
                        first.append({"loader": "ffcv", "file": file_key, "pipeline": pipeline,
                                      "threads": t, "run": run, "result": res})
                for r in first[mark:]:
                    res = r["result"]
                    print(f"first batch {r['loader']:8s} {file_key:10s} {pipeline:5s} "
                          f"{r['run']:16s} "
                          + (f"{res['first_batch_s']:.2f} s" if res.get("ok") else
                             "FAILED " + res.get("error", "").strip().splitlines()[-1]),
                          flush=True)

    load_end = os.getloadavg()
    print("\n## Results\n")
    print(f"- machine: {machine['cpu_model']}, {machine['os_cpu_count']} logical CPUs, "
          f"{machine.get('mem_gib')} GiB; each run pinned to the first N cores (taskset)")
    print("- versions: " + "; ".join(
        f"{k}: " + ", ".join(f"{a} {b}" for a, b in v.items() if a != "python")
        for k, v in versions.items()) + f"; python {machine['python']}")
    print("- .beton files: " + "; ".join(
        f"{k} = {os.path.basename(p)} ({os.path.getsize(p) / 1e6:,.0f} MB)"
        for k, p in betons.items()))
    print("- load average (1/5/15 min): start " + " / ".join(f"{x:.2f}" for x in load_start)
          + ", end " + " / ".join(f"{x:.2f}" for x in load_end)
          + " (this benchmark's own runs count in it)")
    counted = [r["result"] for r in raw_runs if r["result"].get("ok")]
    others = [r.get("others_cores_busy") or 0.0 for r in counted]
    retried = [r for r in raw_runs if r["result"].get("tries", 1) > 1]
    if others:
        print(f"- contention: other processes' CPU on the run's own cores, median "
              f"{statistics.median(others):.2f}, max {max(others):.2f} cores over "
              f"{len(others)} counted runs; {len(retried)} runs were contended "
              f"(> {args.max_others:g} cores) and run again (up to {args.retries} more "
              f"tries, the least contended counted)"
              + (f"; {sum(1 for o in others if o > args.max_others)} counted runs are still "
                 f"contended" if any(o > args.max_others for o in others) else ""))
    print("- img/s/core = median img/s / threads; img/CPU-s = images per user+sys CPU-second "
          "of the child's process tree in the window; cores busy = its CPU-s per wall-s; "
          "others' load = CPU-s per wall-s that other processes took on the same cores "
          "(from /proc/stat; > 0 means contention); "
          "ratio columns: fastdata's img/s/core at the same thread count ÷ the row's")
    print("- val runs on the train images (10,000), see the docstring")
    print_tables(args, configs, results, summary)
    print_first_batch(first)
    for note in notes:
        print(f"\nNote: {note}")

    os.makedirs(args.out_dir, exist_ok=True)
    stem = "loader-quick" if args.quick else "loader"
    png = chart(args, configs, summary, os.path.join(args.out_dir, stem + ".png"))
    out_json = os.path.join(args.out_dir, stem + ".json")
    with open(out_json, "w") as f:
        json.dump({"args": vars(args), "machine": machine,
                   "repo": state, "versions": versions, "skipped": skipped, "notes": notes,
                   "betons": {k: {"path": p, "bytes": os.path.getsize(p)}
                              for k, p in betons.items()},
                   "loadavg_start": load_start, "loadavg_end": load_end,
                   "summary": [{"loader": k[0], "pipeline": k[1], "threads": k[2], **v}
                               for k, v in summary.items()],
                   "runs": raw_runs, "first_batch": first,
                   "wall_s": time.time() - t_start}, f, indent=1)
    print(f"\nchart: {png or '(matplotlib missing)'}\nraw numbers: {out_json}")
    if args.fastdata_root:
        shutil.rmtree(args.fastdata_root, ignore_errors=True)
    print(f"total wall time {(time.time() - t_start) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
