"""``fastdata demo``: the main job on an embedded default, end to end, on any fresh machine.

It synthesises a small ImageNet-style folder of photo-like JPEGs (smooth skies and terrain, soft
objects, texture and sensor noise, at ImageNet-like sizes and JPEG q75-95; nothing is downloaded),
writes it with ``fastdata write imagenet``, inspects the file, reads every sample back, and prints
the throughput of each step.
"""
from __future__ import annotations

import os
import time

import cv2
import numpy as np

from . import jpeg
from .reader import Reader


def synthetic_photo(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """An H x W x 3 uint8 image with a photograph's statistics: smooth regions, edges, texture."""
    yy = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    top, bottom = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    image = top + (bottom - top) * yy + np.zeros((1, width, 3), np.float32)
    # Terrain: a horizon line with low-frequency wiggle, different colour below it.
    xs = np.linspace(0, rng.uniform(2, 8) * np.pi, width)
    horizon = (rng.uniform(0.3, 0.7) + 0.08 * np.sin(xs + rng.uniform(0, 6))) * height
    below = np.arange(height)[:, None] > horizon[None, :]
    image[below] = image[below] * 0.4 + rng.uniform(0, 255, 3) * 0.6
    # Soft objects.
    for _ in range(rng.integers(2, 7)):
        mask = np.zeros((height, width), np.float32)
        center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        axes = (int(rng.integers(5, width // 3 + 6)), int(rng.integers(5, height // 3 + 6)))
        cv2.ellipse(mask, center, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
        mask = cv2.GaussianBlur(mask, (0, 0), rng.uniform(1, 4))[:, :, None]
        image = image * (1 - mask) + rng.uniform(0, 255, 3) * mask
    # Texture at a few scales, then sensor noise.
    for cells in (8, 32, 128):
        grid = rng.normal(0, 1, (max(2, height // cells + 2), max(2, width // cells + 2), 1))
        image += cv2.resize(grid.astype(np.float32), (width, height),
                            interpolation=cv2.INTER_CUBIC)[:, :, None] * rng.uniform(3, 12)
    image += rng.normal(0, rng.uniform(1, 5), image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_imagenet_like(root: str, classes: int = 10, per_class: int = 50, val_per_class: int = 5,
                       seed: int = 0) -> str:
    """Write ``root/{train,val}/<class>/<class>_<i>.JPEG``; returns root.  Deterministic."""
    sizes = [(375, 500), (500, 375), (333, 500), (500, 333), (400, 400), (240, 320), (600, 800)]
    for split, count in (("train", per_class), ("val", val_per_class)):
        for c in range(classes):
            name = f"n{c:08d}"
            folder = os.path.join(root, split, name)
            os.makedirs(folder, exist_ok=True)
            for i in range(count):
                rng = np.random.default_rng((seed, c, i, split == "val"))
                h, w = sizes[int(rng.integers(len(sizes)))]
                data = jpeg.encode(synthetic_photo(rng, h, w), int(rng.integers(75, 96)))
                with open(os.path.join(folder, f"{name}_{i}.JPEG"), "wb") as f:
                    f.write(data)
    return root


def run_demo(work_dir: str, classes: int = 10, per_class: int = 50, workers: int = -1) -> None:
    """Build the folder (once), write it, inspect it, read it all back; print throughput."""
    from .cli import main as cli_main
    from .inspect import describe

    data_dir = os.path.join(work_dir, "imagenet")
    marker = os.path.join(data_dir, f".complete-{classes}x{per_class}")
    if not os.path.exists(marker):
        started = time.perf_counter()
        make_imagenet_like(data_dir, classes=classes, per_class=per_class)
        open(marker, "w").close()
        print(f"made {classes * per_class} training JPEGs in {data_dir} "
              f"({time.perf_counter() - started:.1f} s)")
    out = os.path.join(work_dir, "train.beton")
    command = ["write", "imagenet", "--data-dir", data_dir, "--out", out, "--workers",
               str(workers), "--max-resolution", "500", "--write-mode", "proportion"]
    print("$ fastdata " + " ".join(command))
    status = cli_main(command)
    if status:
        raise RuntimeError(f"fastdata write failed with status {status}")
    with Reader(out) as reader:
        print(describe(reader))
        started = time.perf_counter()
        for i in range(len(reader)):
            image, label = reader[i]
            assert image.ndim == 3 and image.shape[2] == 3 and 0 <= label < classes
        seconds = time.perf_counter() - started
        print(f"read back and decoded all {len(reader)} samples in {seconds:.2f} s: "
              f"{len(reader) / seconds:.0f} images/s (one thread, full decode)")
