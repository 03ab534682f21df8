#!/usr/bin/env python
"""How loader-bound is training?  Real images/s divided by synthetic images/s, per resolution.

The same model, resolution, batch size and precision run ``--steps`` training steps three ways
in one process: on a synthetic batch already on the device (the model's own speed), fed by
fastdata (RandomResizedCrop + flip, each image backend of ``--backends``), and fed by
torchvision's DataLoader (ImageFolder + RandomResizedCrop + RandomHorizontalFlip, same batch,
``--torchvision-workers`` processes).  A ratio near 1 means the loader keeps up; the gap below 1
is time the model waited for data.  Sources are interleaved with synthetic runs over
``--rounds`` rounds, and each counts its best round, so that a load change on a shared machine
favours neither side.

    python bench/loader_bound.py --folder /data/imagenet/train --arch resnet50 \
        --batch-size 256 --threads 16 --torchvision-workers 16
    python bench/loader_bound.py --tiny          # CPU self-check: tiny model, generated images

Without --folder, ``--make N`` ImageNet-like JPEGs are generated (bench/synthetic_classes.py) in
a temporary folder.  fastdata reads a .beton written from the same folder (--beton to give one):
images stored as FFCV's ResNet-50 files store them (max side 500, half JPEG q90).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Callable, Iterator, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import imagenet_loaders as data  # noqa: E402
import imagenet_recipe as recipe  # noqa: E402


def cycle(make: Callable[[], Iterator]) -> Iterator:
    """Batches from new epochs forever (a small set runs out before the steps do)."""
    while True:
        for batch in make():
            yield batch


class Bench:
    """One model, optimizer and precision, timed over any source of (images, labels)."""

    def __init__(self, arch: str, num_classes: int, device: torch.device, precision_name: str):
        self.device = device
        self.precision = recipe.choose_precision(precision_name, device)
        torch.manual_seed(0)
        model = recipe.make_model(arch, num_classes, blurpool=True)
        self.model = model.to(device=device, memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(recipe.param_groups(self.model, 1e-4), lr=1e-3,
                                    momentum=0.9)
        self.step = recipe.TrainStep(self.model, optimizer, self.precision, 0.1)
        self.num_classes = num_classes

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def run(self, batches: Iterator, steps: int, warmup: int) -> tuple[float, float]:
        """(images/s, fraction of the timed steps' wall time spent waiting in next())."""
        self.model.train()
        for _ in range(warmup):
            images, labels = next(batches)
            self.step(images, labels)
        self.sync()
        wait, count = 0.0, 0
        t0 = time.perf_counter()
        for _ in range(steps):
            tw = time.perf_counter()
            images, labels = next(batches)
            wait += time.perf_counter() - tw
            count += images.shape[0]
            self.step(images, labels)
        self.sync()
        seconds = time.perf_counter() - t0
        return count / seconds, wait / seconds

    def synthetic(self, res: int, batch_size: int) -> Iterator:
        g = torch.Generator().manual_seed(0)
        images = torch.randn(batch_size, 3, res, res, generator=g).to(
            self.device, self.precision.input_dtype).contiguous(memory_format=torch.channels_last)
        labels = torch.randint(0, self.num_classes, (batch_size,), generator=g).to(self.device)
        while True:
            yield images, labels

    def fastdata(self, beton: str, res: int, batch_size: int, threads: int, backend: str
                 ) -> tuple[Iterator, Callable[[], None]]:
        train = data.train_data(beton, res=res, batch_size=batch_size, num_workers=threads,
                                device=self.device, dtype=self.precision.input_dtype,
                                distributed=False, seed=0, num_classes=self.num_classes,
                                label_smoothing=0.1, labels=data.LabelOptions(),
                                order="random", backend=backend)
        return (train.split(b) for b in cycle(lambda: iter(train.loader))), train.loader.close

    def torchvision(self, folder: str, res: int, batch_size: int, workers: int) -> Iterator:
        import torchvision.transforms as T
        from torchvision.datasets import ImageFolder
        mean = [m / 255 for m in data.IMAGENET_MEAN]
        std = [s / 255 for s in data.IMAGENET_STD]
        dataset = ImageFolder(folder, T.Compose([T.RandomResizedCrop(res),
                                                 T.RandomHorizontalFlip(), T.ToTensor(),
                                                 T.Normalize(mean, std)]))
        if len(dataset) < batch_size:
            raise data.DataError(f"{folder}: {len(dataset)} images, fewer than one batch of "
                                 f"{batch_size}")
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
            pin_memory=self.device.type == "cuda", persistent_workers=workers > 0)
        dtype = self.precision.input_dtype
        for images, labels in cycle(lambda: iter(loader)):
            images = images.to(self.device, non_blocking=True).to(dtype).contiguous(
                memory_format=torch.channels_last)
            yield images, labels.to(self.device, non_blocking=True)


def prepare_data(args: argparse.Namespace, tmp: str) -> tuple[str, str, int]:
    """(ImageFolder root, .beton path, number of classes)."""
    from fastdata import RGBImageField
    from fastdata.writers import write_imagenet
    import synthetic_classes
    folder = args.folder
    if folder is None:
        folder = os.path.join(tmp, "folder")
        lo, hi = (40, 64) if args.tiny else (300, 500)
        synthetic_classes.write_class_folder(folder, args.make, 10, lo, hi,
                                             workers=max(1, args.make_workers))
    elif not os.path.isdir(folder):
        raise data.DataError(f"--folder {folder}: not a directory")
    beton = args.beton
    if beton is None:
        beton = os.path.join(tmp, "train.beton")
        write_imagenet(folder, beton, split=None, progress=False,
                       image_field=RGBImageField("proportion", max_resolution=500,
                                                 compress_probability=0.5, jpeg_quality=90))
    return folder, beton, data.num_classes_of(beton)


def measure(args: argparse.Namespace, print_fn: Callable[[str], None] = print) -> list[dict]:
    """Rows {resolution, source, images_per_s, wait, ratio}, printed as a table as they come."""
    from fastdata.backends import BACKENDS
    device = recipe.resolve_device(args.device)
    # By default the CPU backend, and with a GPU every other registered one (those whose
    # package is missing are reported as unavailable).
    backends = args.backends or (list(BACKENDS) if device.type == "cuda" else ["cpu"])
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise ValueError(f"unknown backend(s) {unknown}; registered: {list(BACKENDS)}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder, beton, num_classes = prepare_data(args, tmp)
        bench = Bench(args.arch, num_classes, device, args.precision)
        print_fn(f"{args.arch}, batch {args.batch_size}, {bench.precision.name}, {device}, "
                 f"{args.steps} timed steps after {args.warmup}; fastdata {args.threads} threads,"
                 f" torchvision {args.torchvision_workers} workers")
        print_fn(f"{'res':>4} {'source':>22} {'img/s':>10} {'wait':>6} {'real/synthetic':>15}")
        for res in args.resolutions:
            # Rounds interleave the sources with synthetic runs, and each source counts its best
            # round (timeit's convention), so a load burst on a shared machine favours no side.
            synthetic_runs = [bench.run(bench.synthetic(res, args.batch_size), args.steps,
                                        args.warmup)[0]]
            sources = [(f"fastdata {b}", lambda b=b: bench.fastdata(
                beton, res, args.batch_size, args.threads, b)) for b in backends]
            if args.torchvision_workers >= 0:
                sources.append(("torchvision DataLoader", lambda: (bench.torchvision(
                    folder, res, args.batch_size, args.torchvision_workers), None)))
            best: dict[str, tuple[float, float]] = {}
            unavailable: dict[str, str] = {}
            for _ in range(args.rounds):
                for name, make in sources:
                    if name in unavailable:
                        continue
                    try:
                        batches, close = make()
                        rate, wait = bench.run(batches, args.steps, args.warmup)
                    except (RuntimeError, ImportError, OSError) as e:
                        unavailable[name] = f"{type(e).__name__}: {e}"
                        continue
                    if close is not None:
                        close()
                    del batches
                    if name not in best or rate > best[name][0]:
                        best[name] = (rate, wait)
                synthetic_runs.append(bench.run(bench.synthetic(res, args.batch_size),
                                                args.steps, args.warmup)[0])
            synthetic = max(synthetic_runs)
            rows.append(dict(resolution=res, source="synthetic", images_per_s=synthetic,
                             wait=0.0, ratio=1.0))
            runs = ", ".join(f"{v:,.0f}" for v in synthetic_runs)
            print_fn(f"{res:>4} {'synthetic (on device)':>22} {synthetic:>10,.0f} {'':>6} "
                     f"{'':>15}  (best of {runs})")
            for name, _ in sources:
                if name in unavailable:
                    print_fn(f"{res:>4} {name:>22} unavailable: {unavailable[name]}")
                    continue
                rate, wait = best[name]
                rows.append(dict(resolution=res, source=name, images_per_s=rate, wait=wait,
                                 ratio=rate / synthetic))
                print_fn(f"{res:>4} {name:>22} {rate:>10,.0f} {wait:>6.1%} "
                         f"{rate / synthetic:>15.3f}")
    return rows


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--folder", help="ImageFolder tree (class folders) read by both loaders")
    p.add_argument("--beton", help="the same images as a .beton (default: written from "
                                   "--folder into a temporary directory)")
    p.add_argument("--make", type=int, default=2048,
                   help="images to generate when no --folder is given")
    p.add_argument("--make-workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--rounds", type=int, default=2,
                   help="interleaved rounds; each source's best round counts")
    p.add_argument("--resolutions", type=int, nargs="+", default=[160, 192, 224])
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    p.add_argument("--device", default="auto")
    p.add_argument("--backends", nargs="+", help="fastdata image backends (default: cpu, and "
                                                 "with a GPU every registered one)")
    p.add_argument("--threads", type=int, default=-1, help="fastdata decoding threads")
    p.add_argument("--torchvision-workers", type=int, default=os.cpu_count() or 1,
                   help="DataLoader worker processes (-1: leave torchvision out)")
    p.add_argument("--tiny", action="store_true",
                   help="CPU self-check: resnet_tiny, batch 16, 32/48 px, 4 steps, 3 rounds, "
                        "64 images")
    args = p.parse_args(argv)
    if args.tiny:
        args.arch, args.batch_size, args.steps, args.warmup = "resnet_tiny", 16, 4, 1
        args.rounds = max(args.rounds, 3)
        args.resolutions = [r for r in args.resolutions if r <= 64] or [32, 48]
        args.make = min(args.make, 64)
        args.torchvision_workers = min(args.torchvision_workers, 1)
        args.threads = 2 if args.threads < 0 else args.threads
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    try:
        measure(args)
    except (data.DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
