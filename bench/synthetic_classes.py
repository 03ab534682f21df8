"""Small labelled image sets a ResNet can learn, written as .beton files (tests and
gpu_train_check.py; no network, no downloads).

Class k of ``num_classes`` is a photo-like image (fastdata.demo.synthetic_photo) tinted towards
a hue of its own and overlaid with stripes at an angle of its own, so colour and orientation both
tell the classes apart, and a random crop of any part of the image still does.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from fastdata import DatasetWriter, IntField, RGBImageField
from fastdata.demo import synthetic_photo


def class_image(rng: np.random.Generator, label: int, num_classes: int, height: int,
                width: int) -> np.ndarray:
    """An H x W x 3 uint8 image of class ``label``."""
    base = synthetic_photo(rng, height, width).astype(np.float32)
    hue = 2 * np.pi * label / num_classes
    tint = 127.5 + 127.5 * np.array([np.cos(hue), np.cos(hue - 2.094), np.cos(hue + 2.094)],
                                    np.float32)
    angle = np.pi * label / num_classes
    period = max(6.0, min(height, width) / 5)
    phase = (np.arange(width, dtype=np.float32)[None, :] * np.float32(np.cos(angle) / period)
             + np.arange(height, dtype=np.float32)[:, None] * np.float32(np.sin(angle) / period))
    stripes = (np.float32(0.2 * 255) * (phase % 1 < 0.5))[..., None]     # square wave
    image = np.float32(0.35) * base + np.float32(0.45) * tint + stripes
    image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(6)
    return np.clip(image, 0, 255).astype(np.uint8)


def class_samples(n: int, num_classes: int, min_side: int, max_side: int, seed: int
                  ) -> list[tuple[np.ndarray, int]]:
    """``n`` (image, label) pairs, labels cycling over the classes, sizes in [min, max]."""
    samples = []
    for i in range(n):
        rng = np.random.default_rng((seed, i))
        h, w = (int(v) for v in rng.integers(min_side, max_side + 1, 2))
        label = i % num_classes
        samples.append((class_image(rng, label, num_classes, h, w), label))
    return samples


def write_classes(path: str, n: int, num_classes: int = 10, min_side: int = 40,
                  max_side: int = 56, seed: int = 0, write_mode: str = "raw",
                  max_resolution: Optional[int] = None, jpeg_quality: int = 90,
                  num_workers: int = 2, extra: Optional[dict] = None) -> str:
    """Write ``n`` images with fields (image, label[, extra fields]) to ``path``.

    extra: field name -> (Field, function(index, image, label) -> value), appended after label.
    """
    samples = class_samples(n, num_classes, min_side, max_side, seed)
    fields = {"image": RGBImageField(write_mode=write_mode, max_resolution=max_resolution,
                                     jpeg_quality=jpeg_quality),
              "label": IntField()}
    rows = samples
    if extra:
        fields.update({name: f for name, (f, _) in extra.items()})
        rows = [(im, y) + tuple(fn(i, im, y) for _, fn in extra.values())
                for i, (im, y) in enumerate(samples)]
    DatasetWriter(path, fields, num_workers=num_workers, progress=False) \
        .from_indexed_dataset(rows)
    return path


def _write_one(task: tuple) -> None:
    from PIL import Image
    path, seed, i, label, num_classes, min_side, max_side, quality = task
    rng = np.random.default_rng((seed, i))
    h, w = (int(v) for v in rng.integers(min_side, max_side + 1, 2))
    Image.fromarray(class_image(rng, label, num_classes, h, w)).save(path, quality=quality)


def write_class_folder(root: str, n: int, num_classes: int = 10, min_side: int = 300,
                       max_side: int = 500, seed: int = 0, quality: int = 90,
                       workers: int = 1) -> str:
    """An ImageFolder tree ``root/<class>/<i>.JPEG`` of ``n`` JPEGs (what torchvision's
    ImageFolder and fastdata.writers.write_imagenet(root, out, split=None) both read)."""
    import os
    tasks = []
    for i in range(n):
        label = i % num_classes
        folder = os.path.join(root, f"n{label:08d}")
        os.makedirs(folder, exist_ok=True)
        tasks.append((os.path.join(folder, f"{i:07d}.JPEG"), seed, i, label, num_classes,
                      min_side, max_side, quality))
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_write_one, tasks, chunksize=64))
    else:
        for t in tasks:
            _write_one(t)
    return root
