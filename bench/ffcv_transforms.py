"""FFCV's per-image transforms: fastdata's ops against FFCV 1.0.2's compiled code, one thread.

Both sides run each op on the same batch of random uint8 ``[B, S, S, 3]`` images, in the
calling thread: fastdata's op (``op(batch, ctx)``: the draws from the counter-based RNG, then
its Numba kernel) and FFCV's function from ``generate_code()`` compiled as FFCV's Loader
compiles it with one thread (``Compiler.compile``: Numba, fastmath; its draws from numba's
numpy RNG).  Prints images/s per op (median of ``--repeat`` timed runs after one warm-up run)
and the ratio fastdata / FFCV.  FFCV runs under ``--ffcv-python`` (default
``$FASTDATA_FFCV_PYTHON``).

    python bench/ffcv_transforms.py [--batch 64] [--size 160] [--repeat 7]
        [--ffcv-python /path/to/python]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

from fastdata.ops import (Cutout, ImageMixup, NormalizeImage, Poison, RandomBrightness,
                          RandomContrast, RandomSaturation, RandomTranslate)
from fastdata.ops.base import BatchContext

MEAN = [123.7, 116.3, 103.5]
STD = [58.4, 57.1, 57.4]
# name -> constructor source, the same text on both sides.
OPS = {
    "Cutout(16)": "Cutout(16)",
    "RandomTranslate(4)": "RandomTranslate(4)",
    "RandomBrightness(0.2, p=1)": "RandomBrightness(0.2, p=1.0)",
    "RandomContrast(0.2, p=1)": "RandomContrast(0.2, p=1.0)",
    "RandomSaturation(0.2, p=1)": "RandomSaturation(0.2, p=1.0)",
    "ImageMixup(0.2, False)": "ImageMixup(0.2, False)",
    "Poison(every sample)": "Poison(MASK, ALPHA, range(BATCH))",
    "NormalizeImage(float16)": "NormalizeImage(np.array(MEAN), np.array(STD), np.float16)",
}

FFCV_SIDE = r'''
import json, sys, statistics, time
import numpy as np
from ffcv.pipeline.compiler import Compiler
from ffcv.pipeline.state import State
from ffcv.transforms import (Cutout, ImageMixup, NormalizeImage, Poison, RandomBrightness,
                             RandomContrast, RandomSaturation, RandomTranslate)
import torch as ch
Compiler.set_enabled(True)
Compiler.set_num_threads(1)
ops, batch, size, repeat, MEAN, STD = json.loads(sys.argv[1])
BATCH = batch
images = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
MASK = np.random.default_rng(1).integers(0, 256, (size, size, 3)).astype(np.uint8)
ALPHA = np.full((size, size), 0.3)
indices = np.arange(batch, dtype=np.int64)
result = {}
for name, source in ops.items():
    op = eval(source)
    state = State(jit_mode=True, device=ch.device('cpu'), shape=images.shape[1:],
                  dtype=images.dtype)
    _, query = op.declare_state_and_memory(state)
    dst = None if query is None else np.empty((batch, *query.shape), dtype=query.dtype)
    code = op.generate_code()
    with_indices = getattr(code, 'with_indices', False)
    code = Compiler.compile(code)
    args = [images, dst] + ([indices] if with_indices else [])
    code(*args)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        code(*args)
        times.append(time.perf_counter() - start)
    result[name] = batch / statistics.median(times)
print(json.dumps(result))
'''


def fastdata_side(batch: int, size: int, repeat: int) -> dict[str, float]:
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (batch, size, size, 3),
                                                                dtype=np.uint8))
    namespace = dict(globals(), MASK=np.random.default_rng(1).integers(
        0, 256, (size, size, 3)).astype(np.uint8), ALPHA=np.full((size, size), 0.3),
        BATCH=batch, MEAN=MEAN, STD=STD)
    result = {}
    for name, source in OPS.items():
        op = eval(source, namespace)
        op.setup(4)
        ctx = BatchContext(indices=np.arange(batch, dtype=np.int64), epoch=0, seed=0, slot=0)
        op(images, ctx)
        times = []
        for r in range(repeat):
            ctx = BatchContext(indices=np.arange(batch, dtype=np.int64), epoch=r + 1, seed=0,
                               slot=0)
            start = time.perf_counter()
            op(images, ctx)
            times.append(time.perf_counter() - start)
        result[name] = batch / statistics.median(times)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--ffcv-python", default=os.environ.get("FASTDATA_FFCV_PYTHON"))
    args = parser.parse_args()
    if not args.ffcv_python:
        sys.exit("give --ffcv-python or set FASTDATA_FFCV_PYTHON (a python that imports ffcv)")
    torch.set_num_threads(1)
    ours = fastdata_side(args.batch, args.size, args.repeat)
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([args.ffcv_python, "-c", FFCV_SIDE, json.dumps(
        [OPS, args.batch, args.size, args.repeat, MEAN, STD])], capture_output=True, text=True,
        env=env)
    if proc.returncode != 0:
        sys.exit(f"FFCV side failed:\n{proc.stderr[-3000:]}")
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"batch {args.batch} x {args.size}x{args.size}x3 uint8, one thread, median of "
          f"{args.repeat}")
    print(f"{'op':30s} {'fastdata img/s':>15s} {'FFCV img/s':>12s} {'ratio':>7s}")
    for name in OPS:
        print(f"{name:30s} {ours[name]:15.0f} {theirs[name]:12.0f} "
              f"{ours[name] / theirs[name]:7.2f}")


if __name__ == "__main__":
    main()
