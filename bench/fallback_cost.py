"""What the simplejpeg fallback costs against libjpeg-turbo 3's region decoder, in one run.

Where no libturbojpeg 3 is found (see README, "Without libjpeg-turbo 3"), or with
``use_libturbojpeg=False`` on the op, a JPEG is decoded whole by simplejpeg at the same DCT scale
and then resized over the same box.  On one all-JPEG file (FFCV's ResNet-50 storage: max side
500, q90; ``--max-side 0`` keeps the originals) this prints images/s of RandomResizedCrop(size) +
RandomHorizontalFlip (batches of 256, uint8, the loop only takes the batches) with the region
decoder and with the fallback, measured in interleaved rounds (median), and their ratio.  It
also checks both settings give the same crop boxes.

    python bench/fallback_cost.py --data DIR [--images 2000] [--size 224] [--threads 2]
        [--seconds 8] [--repeat 3] [--max-side 500] [--work-dir DIR]

DIR is an ImageNet-style folder with a train/ folder of class folders of JPEGs.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

import numpy as np

from fastdata import Loader, RGBImageField
from fastdata.pixels import libturbojpeg
from fastdata.ops import RandomHorizontalFlip, RandomResizedCrop, ToTensor, ToTorchImage
from labels import measure, warm_page_cache
from fastdata.writers import write_imagenet


def loader(path: str, size: int, region: bool, threads: int, **options) -> Loader:
    return Loader(path, batch_size=256, num_workers=threads, order="random", seed=0,
                  pipelines={"image": [RandomResizedCrop(size, use_libturbojpeg=region),
                                       RandomHorizontalFlip(), ToTensor(), ToTorchImage()],
                             "label": None}, **options)


def same_boxes(path: str, size: int, threads: int) -> bool:
    """Both decoders are fed the same drawn boxes and flips (the first batch's parameters)."""
    params = []
    for region in (True, False):
        source = loader(path, size, region, threads, return_params=True)
        params.append(next(iter(source))[1].numpy())
        source.close()
    return bool(np.array_equal(*params))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="DIR: an ImageNet-style folder with train/")
    parser.add_argument("--data", required=True, metavar="DIR",
                        help="ImageNet-style folder with train/")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=224, help="output side in pixels")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8.0, help="per measurement")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--max-side", type=int, default=500,
                        help="longest side stored (FFCV's ResNet-50 files: 500); 0 keeps originals")
    parser.add_argument("--work-dir", default=None,
                        help="where the .beton file goes (default: a temporary folder)")
    args = parser.parse_args()
    if not libturbojpeg.AVAILABLE:
        print("no libturbojpeg 3 found: nothing to compare the fallback with", file=sys.stderr)
        return 1
    work = args.work_dir or tempfile.mkdtemp(prefix="fastdata-fallback-")
    os.makedirs(work, exist_ok=True)
    path = os.path.join(work, f"jpg{args.max_side}_{args.images}.beton")
    if not os.path.exists(path):
        field = RGBImageField("jpg", max_resolution=args.max_side or None, jpeg_quality=90)
        write_imagenet(args.data, path, split="train", limit=args.images, progress=False,
                       image_field=field)
    warm_page_cache({"file": path})
    if not same_boxes(path, args.size, args.threads):
        print("the two settings drew different boxes: not comparable", file=sys.stderr)
        return 1
    rates = {True: [], False: []}
    for _ in range(args.repeat):
        for region in (True, False):
            rates[region].append(measure(
                lambda: loader(path, args.size, region, args.threads), args.seconds))
    region, fallback = statistics.median(rates[True]), statistics.median(rates[False])
    stored = f"max side {args.max_side}" if args.max_side else "original sizes"
    print(f"{args.images} images, all JPEG ({stored}, q90), RandomResizedCrop({args.size}) + "
          f"flip, {args.threads} threads, {args.repeat} interleaved rounds of "
          f"{args.seconds:.0f} s, median img/s; libturbojpeg: {libturbojpeg.LIBRARY}")
    print("| decoder | img/s | rounds | vs region decoder |")
    print("|---|---:|---|---:|")
    for name, rate, runs in (("libjpeg-turbo 3 region decoder", region, rates[True]),
                             ("simplejpeg whole-image fallback", fallback, rates[False])):
        print(f"| {name} | {rate:.0f} | {', '.join(f'{r:.0f}' for r in runs)} | "
              f"{rate / region:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
