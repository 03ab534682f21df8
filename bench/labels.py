"""Cost of the label-aware pipelines, beside the plain one, in one run.

On the same images (FFCV's ResNet-50 storage: proportion mode, max_resolution 500, q90), batches
of 256, uint8 images, the training loop only takes the batches:

- plain: RandomResizedCrop 224 + flip, integer labels;
- relabel+cutmix: the same, plus ReLabel pooling of a 5 x 15 x 15 label map per image and
  CutMix on the pooled targets (ReLabel's recipe); and the variant that labels the pasted region
  from the partner's map;
- replay: dataset-reinforcement replay (a stored crop, flip and top-10 teacher target per image,
  20 records each), without partners and with 30% of records mixed with a partner.

Runs are interleaved and repeated; the table gives the median images/s and the ratio to plain
(targets: >= 0.95 for relabel+cutmix, >= 0.90 for replay).

    python bench/labels.py --data /data/inet10k [--images 10000] [--threads 2] [--seconds 10]
        [--repeat 3] [--work-dir DIR]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
from PIL import Image

import fastdata
from fastdata import (DatasetWriter, IntField, LabelMapField, Loader, ReinforcementField,
                      RGBImageField)
from fastdata.ops import (IntDecoder, Mixup, RandomHorizontalFlip, RandomResizedCrop, ToTensor,
                          ToTorchImage)
from fastdata.ops.crop_params import random_resized_crop_box
from fastdata.ops.relabel import LabelMapPool
from fastdata.ops.replay import ReplayedCrop, ReplayTargets
from fastdata.rng import make_key
from fastdata.writers.imagenet import ImageNetFolder

NUM_CLASSES = 1000
NUM_AUGS, TOP_K = 20, 10


def label_map(rng: np.random.Generator) -> np.ndarray:
    """A ReLabel-like [2, 5, 15, 15] map: a few classes dominate, scores are logits."""
    classes = rng.choice(NUM_CLASSES, 8, replace=False)
    ids = np.empty((5, 15, 15), np.float32)
    for cell in np.ndindex(15, 15):
        ids[(slice(None), *cell)] = rng.choice(classes, 5, replace=False)
    scores = np.sort(rng.gamma(2.0, 2.0, (5, 15, 15)).astype(np.float32), axis=0)[::-1]
    return np.stack([scores, ids])


def records(rng: np.random.Generator, index: int, width: int, height: int, count: int,
            partner_share: float, sizes: list) -> list:
    """NS reinforcement records: RandomResizedCrop boxes in original pixels, flips, teacher
    top-k, and a partner for ``partner_share`` of them."""
    out = []
    for a in range(count):
        key = np.uint64(make_key(index, 0, a, 99))
        box = random_resized_crop_box(key, height, width, 0.08, 1.0, np.log(3 / 4), np.log(4 / 3))
        record = {"box": box, "flip": bool(rng.random() < 0.5),
                  "ids": rng.choice(NUM_CLASSES, TOP_K, replace=False),
                  "probs": rng.dirichlet(np.ones(TOP_K)) * 0.9}
        if rng.random() < partner_share:
            partner = int(rng.integers(len(sizes)))
            pw, ph = sizes[partner]
            key = np.uint64(make_key(partner, 1, a, 99))
            record.update(partner=partner, partner_flip=bool(rng.random() < 0.5),
                          partner_box=random_resized_crop_box(key, ph, pw, 0.08, 1.0,
                                                              np.log(3 / 4), np.log(4 / 3)))
            if rng.random() < 0.5:
                record["mixup"] = float(rng.uniform(0, 0.5))
            else:
                lam = float(rng.uniform(0.3, 1.0))
                side = int(224 * np.sqrt(1 - lam))
                r1, c1 = (int(v) for v in rng.integers(0, 224 - side + 1, 2))
                record.update(cutmix=lam, cutmix_box=(r1, c1, r1 + side, c1 + side))
        out.append(record)
    return out


def reusable(work: str, count: int) -> dict | None:
    """The files of an earlier run in ``work`` with ``count`` images, if all are there."""
    paths = {name: os.path.join(work, f"{name}.beton")
             for name in ("relabel", "replay", "replay_mixed")}
    try:
        for path in paths.values():
            with fastdata.Reader(path) as reader:
                if len(reader) != count:
                    return None
    except (OSError, fastdata.FormatError):
        return None
    return paths


def warm_page_cache(paths: dict) -> None:
    """Read the files once, so that no pipeline's first round pays for the disk."""
    for path in paths.values():
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass


def build(data_dir: str, work: str, count: int) -> dict:
    folder = ImageNetFolder.scan(os.path.join(data_dir, "train"))
    samples = folder.samples[:count]
    sizes = [Image.open(path).size for path, _ in samples]
    image = dict(write_mode="proportion", max_resolution=500, compress_probability=0.5,
                 jpeg_quality=90)
    paths = {}
    rng = np.random.default_rng(0)
    maps = [label_map(rng) for _ in samples]
    paths["relabel"] = os.path.join(work, "relabel.beton")
    DatasetWriter(paths["relabel"], {"image": RGBImageField(**image), "label": IntField(),
                                     "relabel": LabelMapField()},
                  progress=False).from_indexed_dataset(
        [(path, label, maps[i]) for i, (path, label) in enumerate(samples)])
    for name, share in (("replay", 0.0), ("replay_mixed", 0.3)):
        rng = np.random.default_rng(1)
        recs = [records(rng, i, w, h, NUM_AUGS, share, sizes) for i, (w, h) in enumerate(sizes)]
        paths[name] = os.path.join(work, f"{name}.beton")
        DatasetWriter(paths[name], {"image": RGBImageField(**image), "label": IntField(),
                                    "reinforce": ReinforcementField(NUM_AUGS, TOP_K)},
                      progress=False).from_indexed_dataset([(path, label, recs[i])
                                              for i, (path, label) in enumerate(samples)])
    return paths


def pipelines(paths: dict, threads: int) -> dict:
    image = [RandomResizedCrop(224), RandomHorizontalFlip(), ToTensor(), ToTorchImage()]
    common = dict(batch_size=256, num_workers=threads, order="random", seed=0)
    pool = LabelMapPool(image="image", num_classes=NUM_CLASSES)
    region_pool = LabelMapPool(image="image", num_classes=NUM_CLASSES)
    return {
        "plain": lambda: Loader(paths["relabel"], pipelines={
            "image": image, "label": [IntDecoder(), ToTensor()], "relabel": None}, **common),
        "relabel+cutmix": lambda: Loader(paths["relabel"], pipelines={
            "image": image, "label": None, "relabel": [pool, ToTensor()]},
            batch_ops=[Mixup(0.0, 1.0, label="relabel", label_smoothing=0.0,
                             num_classes=NUM_CLASSES)], **common),
        "relabel+cutmix (region)": lambda: Loader(paths["relabel"], pipelines={
            "image": image, "label": None, "relabel": [region_pool, ToTensor()]},
            batch_ops=[Mixup(0.0, 1.0, label="relabel", label_smoothing=0.0,
                             num_classes=NUM_CLASSES, region_target=region_pool.region_target)],
            **common),
        "replay": lambda: Loader(paths["replay"], pipelines={
            "image": [ReplayedCrop(224), ToTensor(), ToTorchImage()], "label": None,
            "reinforce": [ReplayTargets(NUM_CLASSES), ToTensor()]}, **common),
        "replay, 30% mixed": lambda: Loader(paths["replay_mixed"], pipelines={
            "image": [ReplayedCrop(224), ToTensor(), ToTorchImage()], "label": None,
            "reinforce": [ReplayTargets(NUM_CLASSES), ToTensor()]}, **common),
    }


def measure(make, seconds: float) -> float:
    loader = make()
    next(iter(loader))                     # compile / warm the caches
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for batch in loader:
            count += len(batch[0])
            if time.perf_counter() - started >= seconds:
                break
    rate = count / (time.perf_counter() - started)
    loader.close()
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="ImageNet-style folder with train/")
    parser.add_argument("--images", type=int, default=10000,
                        help="images per file (an epoch: fewer make epoch starts weigh more)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work-dir", default=None,
                        help="where the files go; files of an earlier run there are reused")
    args = parser.parse_args()
    if not os.path.isdir(os.path.join(args.data, "train")):
        print(f"error: {args.data} has no train/ folder", file=sys.stderr)
        return 1
    work = args.work_dir or tempfile.mkdtemp(prefix="fastdata-labels-")
    os.makedirs(work, exist_ok=True)
    started = time.perf_counter()
    paths = reusable(work, args.images) if args.work_dir else None
    if paths is None:
        paths = build(args.data, work, args.images)
        print(f"built files in {time.perf_counter() - started:.0f} s under {work}")
    else:
        print(f"reusing the files under {work}")
    warm_page_cache(paths)
    runs = pipelines(paths, args.threads)
    rates: dict = {name: [] for name in runs}
    print(f"load average before: {os.getloadavg()}")
    for _ in range(args.repeat):
        for name, make in runs.items():
            rates[name].append(measure(make, args.seconds))
    print(f"load average after: {os.getloadavg()}")
    plain = statistics.median(rates["plain"])
    print(f"\n{args.images} images, {args.threads} threads, batches of 256, uint8 224x224, "
          f"fastdata {fastdata.__version__}\n")
    print("| pipeline | img/s (median) | min | max | vs plain | vs plain, per round |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, values in rates.items():
        median = statistics.median(values)
        rounds = [v / p for v, p in zip(values, rates["plain"])]
        print(f"| {name} | {median:.0f} | {min(values):.0f} | {max(values):.0f} | "
              f"{median / plain:.2f} | {min(rounds):.2f}-{max(rounds):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
