"""``fastdata demo``: the main job on an embedded default, end to end, on any fresh machine.

It synthesises a small ImageNet-style folder of photo-like JPEGs (smooth skies and terrain, soft
objects, texture and sensor noise, at ImageNet-like sizes and JPEG q75-95; nothing is downloaded),
writes it with ``fastdata write imagenet``, inspects the file, reads every sample back, loads it
with the training pipeline (RandomResizedCrop 224 + flip) and prints the throughput of each step.
"""
from __future__ import annotations

import os
import time

import cv2
import numpy as np

from .pixels import jpeg
from .reader import Reader


def synthetic_photo(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """An H x W x 3 uint8 image with a photograph's statistics: smooth regions, edges, texture."""
    yy = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    top = rng.uniform(0, 255, 3).astype(np.float32)
    bottom = rng.uniform(0, 255, 3).astype(np.float32)
    image = np.empty((height, width, 3), np.float32)
    image[:] = top + (bottom - top) * yy
    # Terrain: a horizon line with low-frequency wiggle, different colour below it.
    xs = np.linspace(0, rng.uniform(2, 8) * np.pi, width)
    horizon = (rng.uniform(0.3, 0.7) + 0.08 * np.sin(xs + rng.uniform(0, 6))) * height
    below = np.arange(height)[:, None] > horizon[None, :]
    image[below] = image[below] * 0.4 + rng.uniform(0, 255, 3).astype(np.float32) * 0.6
    # Soft objects, blended inside their bounding boxes only.
    for _ in range(rng.integers(2, 7)):
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        ax, ay = int(rng.integers(5, width // 3 + 6)), int(rng.integers(5, height // 3 + 6))
        reach = max(ax, ay) + 12     # a rotated ellipse, plus the blur's tail
        x0, x1 = max(cx - reach, 0), min(cx + reach, width)
        y0, y1 = max(cy - reach, 0), min(cy + reach, height)
        if x1 <= x0 or y1 <= y0:
            continue
        mask = np.zeros((y1 - y0, x1 - x0), np.float32)
        cv2.ellipse(mask, (cx - x0, cy - y0), (ax, ay), float(rng.uniform(0, 180)), 0, 360, 1.0,
                    -1)
        mask = cv2.GaussianBlur(mask, (0, 0), rng.uniform(1, 4))[:, :, None]
        color = rng.uniform(0, 255, 3).astype(np.float32)
        region = image[y0:y1, x0:x1]
        region += (color - region) * mask
    # Texture at a few scales, then sensor noise.
    for cells in (8, 32, 128):
        grid = rng.standard_normal((max(2, height // cells + 2), max(2, width // cells + 2)),
                                   dtype=np.float32)
        texture = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
        image += (texture * np.float32(rng.uniform(3, 12)))[:, :, None]
    noise = rng.standard_normal((height, width, 3), dtype=np.float32)
    image += noise * np.float32(rng.uniform(1, 5))
    return np.clip(image, 0, 255, out=image).astype(np.uint8)


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
    try:
        import torch  # noqa: F401
    except ImportError:
        print("torch is not installed: skipping the loader (pip install torch==2.14.1 "
              "torchvision==0.29.1, as the README says)")
        return
    _load(out, workers)


def _load(path: str, workers: int) -> None:
    """Iterate the file with the training pipeline and print images/s."""
    from .loader import Loader
    from .ops import IntDecoder, RandomHorizontalFlip, RandomResizedCrop, ToTensor, ToTorchImage

    started = time.perf_counter()
    loader = Loader(path, batch_size=64, num_workers=workers, order="random", seed=0,
                    drop_last=False,
                    pipelines={"image": [RandomResizedCrop(224), RandomHorizontalFlip(),
                                         ToTensor(), ToTorchImage()],
                               "label": [IntDecoder(), ToTensor()]})
    next(iter(loader))
    print(f"loader: first batch {time.perf_counter() - started:.2f} s after creating it")
    for epoch in range(3):
        started, count = time.perf_counter(), 0
        for images, labels in loader:
            count += len(labels)
        seconds = time.perf_counter() - started
        print(f"loader epoch {epoch}: {count} images (RandomResizedCrop 224 + flip, "
              f"{loader.num_workers} threads) in {seconds:.2f} s: {count / seconds:.0f} images/s")
