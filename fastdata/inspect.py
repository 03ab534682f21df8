"""What ``fastdata inspect`` prints: fields, sizes, and image resolution and mode histograms."""
from __future__ import annotations

import os
from collections import Counter

import numpy as np
from PIL import Image

from .fields.rgb_image import MODE_JPG, RGBImageField
from .reader import Reader

LONG_SIDE_BINS = (0, 64, 128, 256, 384, 512, 768, 1024, 2048, 65536)


def _histogram(values: np.ndarray, bins: tuple[int, ...]) -> list[str]:
    counts, _ = np.histogram(values, bins=bins)
    total = max(len(values), 1)
    return [f"    {lo:>5}-{hi - 1:<5} {n:>9}  {100 * n / total:5.1f}%"
            for lo, hi, n in zip(bins[:-1], bins[1:], counts) if n]


def describe(reader: Reader) -> str:
    """A human-readable summary of a .beton file."""
    n = reader.num_samples
    lines = [f"file:        {reader.path}",
             f"size:        {reader.file_size:,} bytes ({reader.file_size / 1e6:.1f} MB)",
             f"samples:     {n:,}",
             f"page size:   {reader.page_size:,} bytes",
             f"metadata:    {reader.metadata_dtype.itemsize} bytes per sample",
             "fields:"]
    for k, (name, field) in enumerate(reader.fields.items()):
        sizes = reader.payload_sizes(name)
        per_sample = (f"{float(np.mean(sizes)):,.0f} bytes/sample (min {int(sizes.min()):,}, "
                      f"max {int(sizes.max()):,})" if sizes is not None and n
                      else "in metadata")
        described = field.describe()
        if isinstance(field, RGBImageField) and reader.side_table(name) is None:
            described = "RGBImageField (written by FFCV: settings not recorded)"
        lines.append(f"  {k}: {name!r} type {field.TYPE_ID} {described}: {per_sample}")
        if isinstance(field, RGBImageField) and n:
            modes = Counter(np.where(reader.column(name)["mode"] == MODE_JPG, "jpg", "raw")
                            .tolist())
            lines.append("     mode: " + ", ".join(f"{m} {c:,} ({100 * c / n:.1f}%)"
                                                   for m, c in sorted(modes.items())))
            sizes = reader.image_sizes(name)             # (height, width) columns
            long_side = sizes.stored.max(axis=1)
            lines.append(f"     stored size: mean {sizes.stored[:, 1].mean():.0f}x"
                         f"{sizes.stored[:, 0].mean():.0f}, longest side histogram:")
            lines += _histogram(long_side, LONG_SIDE_BINS)
            if reader.side_table(name) is not None:
                resized = int(np.count_nonzero(sizes.original.max(axis=1) != long_side))
                lines.append(f"     original size: mean {sizes.original[:, 1].mean():.0f}x"
                             f"{sizes.original[:, 0].mean():.0f}; {resized:,} images were "
                             f"downscaled")
            else:
                lines.append("     original size: not recorded (written by FFCV)")
    return "\n".join(lines)


def dump_images(reader: Reader, count: int, out_dir: str) -> list[str]:
    """Decode the first ``count`` samples' images and save them as PNG files in ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    image_fields = [name for name, f in reader.fields.items() if isinstance(f, RGBImageField)]
    paths = []
    for i in range(min(count, reader.num_samples)):
        for name in image_fields:
            path = os.path.join(out_dir, f"{i:06d}_{name}.png")
            Image.fromarray(reader.read(i, name)).save(path)
            paths.append(path)
    return paths
