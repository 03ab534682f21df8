"""The ``fastdata`` command line: ``write``, ``merge``, ``inspect`` and ``demo``.

A user mistake (missing folder, corrupt file, bad option) prints one line starting with
``fastdata: error:`` and exits with status 1 (2 for bad usage), never a traceback.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from typing import Optional, Sequence

from .fields.rgb_image import WRITE_MODES, RGBImageField
from .constants import DEFAULT_PAGE_SIZE
from .format import FormatError
from .reader import Reader, SampleError
from .shards import parse_shard
from .workers import default_workers
from .writer import WriteError, WriteReport, WriteTerminated


class UserError(Exception):
    """A mistake the user can fix; printed as one line."""


def _add_image_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="the .beton file to write")
    p.add_argument("--max-resolution", type=int, default=None, metavar="N",
                   help="cap the longest image side at N pixels (area downscale; default: keep)")
    p.add_argument("--write-mode", choices=WRITE_MODES, default="jpg",
                   help="how images are stored (default: jpg)")
    p.add_argument("--jpeg-quality", type=int, default=90, metavar="Q",
                   help="quality of JPEGs that are (re-)encoded (default: 90)")
    p.add_argument("--compress-probability", type=float, default=0.5, metavar="P",
                   help="share of images stored as JPEG in proportion mode (default: 0.5)")
    p.add_argument("--smart-threshold", type=int, default=None, metavar="BYTES",
                   help="smart mode: store as JPEG when raw pixels exceed BYTES")
    p.add_argument("--reencode", action="store_true",
                   help="re-encode every JPEG at --jpeg-quality, as FFCV does (default: store a "
                        "source JPEG that needs no resize as it is, with no second loss)")
    p.add_argument("--exif-transpose", action="store_true",
                   help="apply EXIF orientation (default: off, as torchvision's ImageFolder)")
    p.add_argument("--workers", type=int, default=-1, metavar="N",
                   help=f"encoding threads; 0: none, encode in the main thread (default: all "
                        f"cores, here {default_workers()})")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="write only the first N images (in label order)")
    p.add_argument("--on-error", choices=("skip", "fail"), default="fail",
                   help="a file that cannot be decoded: skip it (listed at the end and in "
                        "OUT.errors.tsv) or stop with a non-zero exit (default: fail)")
    p.add_argument("--page-size", type=int, default=DEFAULT_PAGE_SIZE, metavar="BYTES",
                   help="page size, a power of two >= 2 MiB (default: 8 MiB)")
    p.add_argument("--seed", type=int, default=0, help="seed of proportion mode's draws")
    p.add_argument("--shard", default=None, metavar="K/N",
                   help="write only shard K of N (0 <= K < N): a contiguous range of the "
                        "records, in the order of a whole write, so N jobs convert one dataset "
                        "in parallel; name the files OUT-K-of-N.beton (e.g. train-0-of-4.beton) "
                        "and read them with Loader([...]) or join them with `fastdata merge`")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastdata", description="Write, inspect and try .beton files (FFCV-compatible).")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    write = commands.add_parser("write", help="convert a dataset into a .beton file",
                                description="Convert a dataset into a .beton file.")
    sources = write.add_subparsers(dest="source", metavar="SOURCE", required=True)
    imagenet = sources.add_parser(
        "imagenet", help="an ImageNet-style folder: DIR/<split>/<class>/<images>",
        description="Write DIR/<split>/<class>/<images> with fields image and label; labels are "
                    "torchvision ImageFolder's class ids (class folders sorted by name).")
    imagenet.add_argument("--data-dir", required=True, metavar="DIR",
                          help="folder holding the split folders (train/, val/)")
    imagenet.add_argument("--split", default="train",
                          help="split folder under DIR (default: train)")
    _add_image_options(imagenet)
    imagenet.add_argument("--relabel-maps", default=None, metavar="DIR",
                          help="also store ReLabel's per-image label maps, DIR/<class>/<image "
                               "stem>.pt, in a field 'relabel' (needs torch; a missing or bad "
                               "map fails its image, see --on-error)")
    folder = sources.add_parser(
        "folder", help="every image below a folder, with its relative path",
        description="Write every image below DIR (sorted) with fields image and path (JSON).")
    folder.add_argument("--data-dir", required=True, metavar="DIR")
    _add_image_options(folder)
    from fastdata.writers.reinforce import add_subcommand as add_reinforce
    add_reinforce(sources)

    merge = commands.add_parser(
        "merge", help="join shard files into one .beton file",
        description="Join shard files (written with --shard, or any .beton files with the same "
                    "fields and page size) into one file by copying their records, without "
                    "re-encoding; FFCV reads the result.  Files named NAME-K-of-N.beton are "
                    "put in K order and must be all N shards.")
    merge.add_argument("shards", nargs="+", metavar="SHARD",
                       help="the shard files, or one quoted glob pattern")
    merge.add_argument("--out", required=True, help="the .beton file to write")

    inspect = commands.add_parser(
        "inspect", help="describe a .beton file",
        description="Print a .beton file's fields, sizes and image statistics; optionally dump "
                    "decoded samples as image files.")
    inspect.add_argument("file")
    inspect.add_argument("--dump", type=int, default=0, metavar="N",
                         help="write the first N samples' images to --out as PNG files")
    inspect.add_argument("--out", default=None, metavar="DIR", help="folder for --dump")

    demo = commands.add_parser(
        "demo", help="build a small ImageNet-style folder, write it, read it back",
        description="The main job on an embedded default: synthesise a small ImageNet-style "
                    "folder of photo-like JPEGs, write it with `fastdata write imagenet`, inspect "
                    "it, read every sample back, and print throughput.")
    demo.add_argument("--dir", default="fastdata-demo", help="working folder (default: "
                                                              "./fastdata-demo)")
    demo.add_argument("--classes", type=int, default=10)
    demo.add_argument("--per-class", type=int, default=50)
    demo.add_argument("--workers", type=int, default=-1)
    return parser


def _image_field(args: argparse.Namespace) -> RGBImageField:
    try:
        return RGBImageField(write_mode=args.write_mode, max_resolution=args.max_resolution,
                             smart_threshold=args.smart_threshold, jpeg_quality=args.jpeg_quality,
                             compress_probability=args.compress_probability,
                             keep_source_jpeg=not args.reencode,
                             exif_transpose=args.exif_transpose, seed=args.seed)
    except ValueError as err:
        raise UserError(str(err)) from None


def print_report(report: WriteReport, out=None) -> None:
    """The write summary, with every skipped file listed."""
    out = out or sys.stdout
    for failure in report.failures:
        print(f"skipped: {failure}", file=out)
    mb = report.file_size / 1e6
    print(f"wrote {report.num_written} samples to {report.path} ({mb:.1f} MB, "
          f"{report.file_size / max(report.num_written, 1) / 1e3:.1f} KB/sample) in "
          f"{report.seconds:.1f} s: {report.samples_per_second:.0f} images/s", file=out)
    if report.failures:
        print(f"skipped {report.num_failed} files that could not be decoded; listed in "
              f"{report.error_log}", file=out)


def cmd_write(args: argparse.Namespace) -> int:
    from fastdata.writers import write_folder, write_imagenet
    if args.source == "reinforce":
        from fastdata.writers.reinforce import run
        return run(args)
    if args.limit is not None and args.limit <= 0:
        raise UserError("--limit must be positive")
    if args.workers < -1:
        raise UserError("--workers must be -1 (all cores), 0 (no worker threads) or positive")
    field = _image_field(args)
    common = dict(image_field=field, limit=args.limit, num_workers=args.workers,
                  on_error=args.on_error, page_size=args.page_size, progress=not args.quiet,
                  shard=None if args.shard is None else parse_shard(args.shard))
    if args.source == "imagenet":
        report = write_imagenet(args.data_dir, args.out, split=args.split,
                                relabel_maps=args.relabel_maps, **common)
    else:
        report = write_folder(args.data_dir, args.out, **common)
    print_report(report)
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from .merge import merge_shards
    shards = args.shards[0] if len(args.shards) == 1 else args.shards
    report = merge_shards(shards, args.out)
    print(f"merged {report.num_shards} shards ({report.num_samples} samples) into {report.path} "
          f"({report.file_size / 1e6:.1f} MB) in {report.seconds:.1f} s: "
          f"{report.megabytes_per_second:.0f} MB/s")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from .inspect import describe, dump_images
    if args.dump and not args.out:
        raise UserError("--dump needs --out DIR")
    with Reader(args.file) as reader:
        print(describe(reader))
        if args.dump:
            paths = dump_images(reader, args.dump, args.out)
            print(f"dumped {len(paths)} images to {args.out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    run_demo(args.dir, classes=args.classes, per_class=args.per_class, workers=args.workers)
    return 0


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"fastdata: warning: {message}", file=sys.stderr)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {"write": cmd_write, "merge": cmd_merge, "inspect": cmd_inspect,
               "demo": cmd_demo}[args.command]
    with warnings.catch_warnings():
        warnings.showwarning = _print_warning
        try:
            return handler(args)
        except (UserError, ValueError, FormatError, WriteError, SampleError, OSError) as err:
            print(f"fastdata: error: {err}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("fastdata: interrupted; nothing was written at the output path",
                  file=sys.stderr)
            return 130
        except WriteTerminated as stop:
            print("fastdata: terminated (SIGTERM); nothing was written at the output path",
                  file=sys.stderr)
            return int(stop.code)


if __name__ == "__main__":
    sys.exit(main())
