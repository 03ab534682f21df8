"""Any tree of image files: every image below a folder, in sorted path order, stored with its
path relative to the folder (a JSON field), for unlabelled data or labels kept elsewhere."""
from __future__ import annotations

import os
from typing import Optional

from fastdata import DatasetWriter, JSONField, RGBImageField, WriteReport
from fastdata.constants import DEFAULT_PAGE_SIZE
from fastdata.shards import shard_range

from .imagenet import _is_image_name


def find_images(root: str) -> list[str]:
    """Paths of all image files below ``root`` (hidden entries skipped), sorted."""
    if not os.path.isdir(root):
        raise ValueError(f"{root} is not a folder")
    paths = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        paths.extend(os.path.join(dirpath, f) for f in filenames if _is_image_name(f))
    if not paths:
        raise ValueError(f"{root} holds no image files")
    return sorted(paths)


def write_folder(data_dir: str, out: str, image_field: Optional[RGBImageField] = None,
                 limit: Optional[int] = None, num_workers: int = -1, on_error: str = "fail",
                 page_size: int = DEFAULT_PAGE_SIZE, progress: bool = True,
                 shard: Optional[tuple[int, int]] = None) -> WriteReport:
    """Write every image below ``data_dir`` with fields ``image`` and ``path``; ``shard=(K, N)``
    writes only shard K of N of them (see write_imagenet)."""
    paths = find_images(data_dir)[:limit] if limit else find_images(data_dir)
    samples = [(p, os.path.relpath(p, data_dir)) for p in paths]
    fields = {"image": image_field or RGBImageField(), "path": JSONField()}
    writer = DatasetWriter(out, fields, page_size=page_size, num_workers=num_workers,
                           on_error=on_error, progress=progress)
    records = None if shard is None else shard_range(len(samples), *shard)
    return writer.from_indexed_dataset(samples, indices=records, chunksize=8,
                                       describe=lambda i: samples[i][0], worker_type="thread")
