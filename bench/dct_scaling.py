"""What DCT-scaled decoding buys and what it costs in pixels, in one run.

RandomResizedCrop decodes a JPEG at 1/2, 1/4 or 1/8 scale when the crop box is at least that
many times the output size (``dct_scaling=True``, the default), else at full scale.  On the same
all-JPEG file (FFCV's ResNet-50 storage but every image a JPEG: max side 500, q90) this prints,
per output size:

- images/s with and without DCT scaling (RandomResizedCrop + flip, batches of 256, uint8, the
  loop only takes the batches; interleaved rounds, median) and their ratio;
- the share of samples decoded at a reduced scale;
- the pixel difference of each setting from torchvision's ``resized_crop(antialias=True)`` of
  the full-resolution decode over the same box: mean, share of values off by more than 2
  levels, and max.

    python bench/dct_scaling.py --data /data/inet10k [--images 2000] [--sizes 64,160,224]
        [--threads 2] [--seconds 8] [--repeat 3] [--compare 300] [--work-dir DIR]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

import numpy as np
import torch
import torchvision.transforms.v2.functional as tvf

from fastdata import Loader, Reader, RGBImageField
from fastdata.ops import RandomHorizontalFlip, RandomResizedCrop, ToTensor, ToTorchImage
from fastdata.pixels.image_kernel import dct_denominator
from labels import measure, warm_page_cache
from fastdata.writers import write_imagenet


def loader(path: str, size: int, dct: bool, threads: int, **options) -> Loader:
    return Loader(path, batch_size=256, num_workers=threads, order="random", seed=0,
                  pipelines={"image": [RandomResizedCrop(size, dct_scaling=dct),
                                       RandomHorizontalFlip(), ToTensor(), ToTorchImage()],
                             "label": None}, **options)


def pixel_difference(path: str, size: int, dct: bool, count: int) -> dict:
    """Against torchvision on the full decode, over the first ``count`` samples of epoch 0."""
    source = Loader(path, batch_size=min(count, 64), num_workers=2, order="sequential",
                    indices=range(count), drop_last=False, return_params=True,
                    pipelines={"image": [RandomResizedCrop(size, dct_scaling=dct),
                                         RandomHorizontalFlip(), ToTensor()], "label": None})
    diffs, scaled = [], 0
    with Reader(path) as reader:
        k = 0
        for images, params in source:
            for image, p in zip(images.numpy(), params.numpy()):
                top, left, h, w = (int(v) for v in p[:4])
                scaled += dct_denominator(h, w, size, size, 8) > 1
                full = torch.from_numpy(reader.read(k, "image")).permute(2, 0, 1)
                want = tvf.resized_crop(full, top, left, h, w, [size, size], antialias=True)
                want = want.permute(1, 2, 0).numpy()
                if p[8]:
                    want = want[:, ::-1]
                diffs.append(np.abs(image.astype(np.int16) - want.astype(np.int16)).ravel())
                k += 1
    source.close()
    d = np.concatenate(diffs)
    return {"mean": float(d.mean()), "over2": float((d > 2).mean()), "max": int(d.max()),
            "scaled": scaled / k}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="ImageNet-style folder with train/")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--sizes", default="64,160,224")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--compare", type=int, default=300,
                        help="samples compared with torchvision per size and setting")
    parser.add_argument("--work-dir", default=None,
                        help="where the .beton file goes (default: a temporary folder)")
    args = parser.parse_args()
    work = args.work_dir or tempfile.mkdtemp(prefix="fastdata-dct-")
    os.makedirs(work, exist_ok=True)
    path = os.path.join(work, "jpg500.beton")
    if not os.path.exists(path):
        write_imagenet(args.data, path, split="train", limit=args.images, progress=False,
                       image_field=RGBImageField("jpg", max_resolution=500, jpeg_quality=90))
    warm_page_cache({"file": path})
    sizes = [int(s) for s in args.sizes.split(",")]
    rates = {(size, dct): [] for size in sizes for dct in (True, False)}
    for _ in range(args.repeat):
        for size in sizes:
            for dct in (True, False):
                rates[size, dct].append(measure(lambda: loader(path, size, dct, args.threads),
                                                args.seconds))
    print(f"{args.images} images, all JPEG (max side 500, q90), {args.threads} threads, "
          f"{args.repeat} interleaved rounds of {args.seconds:.0f} s, median img/s; pixels vs "
          f"torchvision resized_crop on the full decode, {args.compare} samples")
    print("| size | DCT scaling | img/s | vs off | scaled samples | mean diff | >2 levels "
          "| max |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for size in sizes:
        off = statistics.median(rates[size, False])
        for dct in (True, False):
            rate = statistics.median(rates[size, dct])
            px = pixel_difference(path, size, dct, args.compare)
            print(f"| {size} | {'on' if dct else 'off'} | {rate:.0f} | {rate / off:.2f} | "
                  f"{px['scaled'] if dct else 0:.0%} | {px['mean']:.2f} | {px['over2']:.1%} | "
                  f"{px['max']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
