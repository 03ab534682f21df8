"""``fastdata write reinforce``: the command line of both reinforce writers."""
from __future__ import annotations

import argparse

from .ml_dr import import_imagenet_plus
from .teacher import reinforce


def add_subcommand(subparsers) -> argparse.ArgumentParser:
    """Add ``reinforce`` to the ``fastdata write`` sources."""
    p = subparsers.add_parser(
        "reinforce", help="add Dataset Reinforcement records (teacher top-k) to a .beton file",
        description="Write a new .beton file with --data's fields (copied, not re-encoded) plus a "
                    "ReinforcementField: either generated with --teacher, or imported from "
                    "ml-dr's ImageNet+ records with --imagenet-plus DIR.")
    p.add_argument("--data", required=True, metavar="FILE", dest="input",
                   help="the .beton file to reinforce (fields image and label)")
    p.add_argument("--out", required=True, help="the .beton file to write")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--teacher", metavar="MODULE:CALLABLE",
                     help="logits = CALLABLE(float [B,3,H,W] normalised batch)")
    src.add_argument("--imagenet-plus", metavar="DIR",
                     help="folder of ml-dr's <index>.pth.tar records")
    p.add_argument("--num-augs", type=int, default=None, metavar="NS",
                   help="augmentations per image (required with --teacher)")
    p.add_argument("--top-k", type=int, default=None, metavar="K",
                   help="teacher outputs kept (default: 10 with --teacher, from the records "
                        "with --imagenet-plus)")
    p.add_argument("--transforms", default="random_resized_crop,random_horizontal_flip",
                   help="--imagenet-plus: comma-separated order of the entries of P")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default=None, help="teacher device (default: cuda if available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-size", type=int, default=224)
    p.add_argument("--mixup-p", type=float, default=0.0)
    p.add_argument("--mixup-alpha", type=float, default=1.0)
    p.add_argument("--cutmix-p", type=float, default=0.0)
    p.add_argument("--cutmix-alpha", type=float, default=1.0)
    p.add_argument("--image-field", default=None, help="default: the only image field")
    p.add_argument("--field-name", default="reinforce")
    p.add_argument("--workers", type=int, default=-1)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``fastdata write reinforce``; ValueError/OSError propagate to the CLI's handler."""
    if args.imagenet_plus:
        report = import_imagenet_plus(
            args.input, args.imagenet_plus, args.out,
            transforms=[t.strip() for t in args.transforms.split(",") if t.strip()],
            num_augs=args.num_augs, top_k=args.top_k, output_size=args.output_size,
            image=args.image_field, field_name=args.field_name, num_workers=args.workers,
            progress=not args.quiet)
    else:
        if args.num_augs is None:
            raise ValueError("--teacher needs --num-augs")
        report = reinforce(args.input, args.teacher, args.out, args.num_augs,
                           args.top_k or 10, batch_size=args.batch_size, device=args.device,
                           seed=args.seed, mixup_p=args.mixup_p, mixup_alpha=args.mixup_alpha,
                           cutmix_p=args.cutmix_p, cutmix_alpha=args.cutmix_alpha,
                           output_size=args.output_size, image=args.image_field,
                           field_name=args.field_name, num_workers=args.workers,
                           progress=not args.quiet)
    print(f"wrote {report.num_written} samples to {report.path} "
          f"({report.file_size / 1e6:.1f} MB) in {report.seconds:.1f} s")
    return 0
