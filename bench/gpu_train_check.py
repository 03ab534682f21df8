#!/usr/bin/env python
"""The device check of the training benchmark: one GPU, its CPU cores, no network.

1. Makes an ImageNet-like set in a temporary folder (JPEGs of photo-like synthetic images,
   sides 300-500 px, q90, 100 classes; bench/synthetic_classes.py) and writes it to .beton files
   as FFCV's ResNet-50 files are written (max side 500, half the images JPEG q90).
2. Loader-bound ratio (bench/loader_bound.py): ResNet-50, bf16 autocast, channels_last, batch
   256, at 160/192/224 px: synthetic input on the GPU vs fastdata's CPU backend with
   ``--threads`` threads vs torchvision's DataLoader with ``--torchvision-workers`` processes.
3. Two epochs of the 16-epoch ResNet-50 recipe (bench/configs/rn50_16_epochs.yaml) through
   bench/train_imagenet.py, batch 256 (lr scaled from FFCV's 1.7 at 4096).
4. A table of images/s and data-wait fractions, and the projection of 16 and 88 epochs on 8 GPUs
   from the measured per-GPU images/s (labelled as a projection) beside FFCV's 8xA100 times.

    python bench/gpu_train_check.py                 # on the GPU machine (16 cores, one H200)
    python bench/gpu_train_check.py --tiny          # CPU self-check of the machinery (minutes)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import yaml  # noqa: E402

import imagenet_recipe as recipe  # noqa: E402
import loader_bound  # noqa: E402
import synthetic_classes  # noqa: E402
import train_imagenet  # noqa: E402
from train_projection import projection_table  # noqa: E402


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train-images", type=int, default=25_600)
    p.add_argument("--val-images", type=int, default=2_560)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=16, help="fastdata decoding threads")
    p.add_argument("--torchvision-workers", type=int, default=16)
    p.add_argument("--steps", type=int, default=40, help="timed steps per loader-bound row")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--rounds", type=int, default=2, help="loader-bound rounds (best counts)")
    p.add_argument("--epochs", type=int, default=2, help="epochs of the 16-epoch recipe")
    p.add_argument("--precision", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--workdir", help="keep the generated data here (default: a temporary "
                                     "folder, deleted at the end)")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--tiny", action="store_true",
                   help="CPU self-check: 128 small images, resnet_tiny, 32-64 px, batch 16")
    args = p.parse_args(argv)
    if args.tiny:
        args.train_images, args.val_images, args.classes = 128, 64, 10
        args.batch_size, args.threads, args.torchvision_workers = 16, 2, 1
        args.steps, args.warmup, args.device, args.rounds = 3, 1, "cpu", 3
    return args


def make_data(args: argparse.Namespace, root: str) -> tuple[str, str, str]:
    """(train folder, train .beton, val .beton)."""
    from fastdata import RGBImageField
    from fastdata.writers import write_imagenet
    lo, hi = (40, 64) if args.tiny else (300, 500)
    cores = os.cpu_count() or 1
    t0 = time.perf_counter()
    train_dir = synthetic_classes.write_class_folder(os.path.join(root, "train"),
                                                     args.train_images, args.classes, lo, hi,
                                                     seed=0, workers=cores)
    val_dir = synthetic_classes.write_class_folder(os.path.join(root, "val"), args.val_images,
                                                   args.classes, lo, hi, seed=1, workers=cores)
    field = dict(write_mode="proportion", max_resolution=500, compress_probability=0.5,
                 jpeg_quality=90)
    train, val = os.path.join(root, "train.beton"), os.path.join(root, "val.beton")
    write_imagenet(train_dir, train, split=None, progress=False,
                   image_field=RGBImageField(**field))
    write_imagenet(val_dir, val, split=None, progress=False, image_field=RGBImageField(**field))
    print(f"data: {args.train_images:,} train / {args.val_images:,} val images, "
          f"{args.classes} classes, made in {time.perf_counter() - t0:.0f} s", flush=True)
    return train_dir, train, val


def training_config(args: argparse.Namespace, root: str) -> str:
    """The 16-epoch ResNet-50 recipe; with --tiny, resnet_tiny at 32-64 px (val 64)."""
    path = recipe.CONFIG_DIR / "rn50_16_epochs.yaml"
    if not args.tiny:
        return str(path)
    config = yaml.safe_load(path.read_text())
    config["model"]["arch"] = "resnet_tiny"
    config["resolution"].update(min_res=32, max_res=64, start_ramp=0, end_ramp=1)
    config["validation"]["resolution"] = 64
    tiny = os.path.join(root, "rn50_16_tiny.yaml")
    with open(tiny, "w") as f:
        yaml.safe_dump(config, f)
    return tiny


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    import torch
    device = recipe.resolve_device(args.device)
    if device.type == "cuda":
        print(f"device: {torch.cuda.get_device_name(device)}, {os.cpu_count()} CPU cores, "
              f"torch {torch.__version__}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.workdir or tmp
        os.makedirs(root, exist_ok=True)
        train_dir, train, val = make_data(args, root)

        bound_argv = ["--folder", train_dir, "--beton", train, "--batch-size",
                      str(args.batch_size), "--steps", str(args.steps), "--warmup",
                      str(args.warmup), "--rounds", str(args.rounds), "--threads",
                      str(args.threads),
                      "--torchvision-workers", str(args.torchvision_workers),
                      "--precision", args.precision, "--device", str(device)]
        bound_argv += ["--arch", "resnet_tiny", "--resolutions", "32", "64"] if args.tiny \
            else ["--arch", "resnet50", "--resolutions", "160", "192", "224"]
        print("\n== loader-bound ratio", flush=True)
        bound = loader_bound.measure(loader_bound.parse_args(bound_argv))

        print(f"\n== {args.epochs} epochs of the 16-epoch ResNet-50 recipe", flush=True)
        ckpt = os.path.join(root, "run")
        train_argv = ["--config", training_config(args, root), "--train-dataset", train,
                      "--val-dataset", val, "--batch-size", str(args.batch_size),
                      "--num-workers", str(args.threads), "--stop-after-epoch",
                      str(args.epochs), "--checkpoint-dir", ckpt, "--progress", "lines",
                      "--print-freq", "25", "--precision", args.precision, "--device",
                      str(device)] + (["--compile"] if args.compile else [])
        rc = train_imagenet.main(train_argv)
        if rc != 0:
            print(f"training failed (exit {rc})", file=sys.stderr)
            return rc
        with open(os.path.join(ckpt, "log.jsonl")) as f:
            epochs = [json.loads(line) for line in f]

    print("\n== summary")
    print(f"{'what':>34} {'res':>4} {'img/s':>9} {'data wait':>10} {'real/synthetic':>15}")
    for r in bound:
        print(f"{'loader-bound: ' + r['source']:>34} {r['resolution']:>4} "
              f"{r['images_per_s']:>9,.0f} {r['wait']:>10.1%} {r['ratio']:>15.3f}")
    for e in epochs:
        print(f"{'training epoch ' + str(e['epoch']):>34} {e['resolution']:>4} "
              f"{e['images_per_s']:>9,.0f} {e['data_wait_fraction']:>10.1%} {'':>15}")
    configs = {n: recipe.load_config(recipe.CONFIG_DIR / f"rn50_{n}_epochs.yaml")
               for n in (16, 88)}
    fed = {r["resolution"]: r["images_per_s"] for r in bound if r["source"] == "fastdata cpu"}
    if fed and not args.tiny:
        print("\nfrom the loader-bound runs (fastdata cpu backend, per GPU):")
        print(projection_table(fed, configs, recipe.resolution, "resnet50"))
    steady = epochs[1:] or epochs      # the first epoch includes cudnn autotuning / compiling
    per_gpu = {e["resolution"]: e["images_per_s"] for e in steady}
    if not args.tiny:
        print("\nfrom the training epochs (validation excluded):")
        print(projection_table(per_gpu, configs, recipe.resolution, "resnet50"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"loader_bound": bound, "epochs": epochs}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
