"""ImageNet-style folders: ``<split>/<class>/<images>``, labelled exactly as torchvision's
``ImageFolder`` labels them (classes sorted by name, files sorted by path within each class), so
label ids match a torchvision model's and the record order matches ``ImageFolder`` indices.

Hidden entries (names starting with '.') are ignored: they are editor, OS and notebook droppings
(``.DS_Store``, ``._x.JPEG``, ``.ipynb_checkpoints``).  torchvision would count a hidden folder as
a class, so such a folder is reported in a warning: ids then differ from torchvision's.
Stray files beside the class folders are ignored too, with a warning.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Optional

from fastdata import DatasetWriter, IntField, RGBImageField, WriteReport
from fastdata.constants import DEFAULT_PAGE_SIZE
from fastdata.fields.label_map import LabelMapField
from fastdata.shards import shard_range

# torchvision's IMG_EXTENSIONS (matched case-insensitively, as torchvision does)
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def find_classes(directory: str) -> tuple[list[str], dict[str, int]]:
    """Class folder names in torchvision's order and their ids; ValueError if there are none."""
    if not os.path.isdir(directory):
        raise ValueError(f"{directory} is not a folder")
    classes, hidden, stray = [], [], []
    for entry in os.scandir(directory):
        if entry.name.startswith("."):
            hidden.append(entry.name)
        elif entry.is_dir():
            classes.append(entry.name)
        else:
            stray.append(entry.name)
    classes.sort()
    if hidden:
        warnings.warn(f"{directory}: ignored hidden entries {sorted(hidden)[:5]}; torchvision's "
                      f"ImageFolder would count hidden folders as classes", stacklevel=2)
    if stray:
        warnings.warn(f"{directory}: ignored {len(stray)} files beside the class folders "
                      f"(e.g. {sorted(stray)[0]})", stacklevel=2)
    if not classes:
        raise ValueError(f"{directory} has no class folders")
    return classes, {name: i for i, name in enumerate(classes)}


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS)


@dataclass
class ImageNetFolder:
    """The (path, label) list of an ImageNet-style folder, in torchvision's order."""
    root: str
    classes: list[str]
    samples: list[tuple[str, int]]

    @classmethod
    def scan(cls, root: str) -> "ImageNetFolder":
        """List ``root/<class>/**/<image>``; ValueError naming an empty class folder."""
        classes, class_to_idx = find_classes(root)
        samples = []
        for name in classes:
            class_dir = os.path.join(root, name)
            found = 0
            # torchvision: sorted(os.walk(followlinks=True)), then sorted file names.
            walk = []
            for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                walk.append((dirpath, filenames))
            for dirpath, filenames in sorted(walk):
                for fname in sorted(filenames):
                    if _is_image_name(fname):
                        samples.append((os.path.join(dirpath, fname), class_to_idx[name]))
                        found += 1
            if not found:
                raise ValueError(f"class folder {class_dir} holds no image files "
                                 f"({', '.join(IMG_EXTENSIONS)})")
        return cls(root, classes, samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[str, int]:
        return self.samples[index]


def write_imagenet(data_dir: str, out: str, split: Optional[str] = "train",
                   image_field: Optional[RGBImageField] = None, limit: Optional[int] = None,
                   num_workers: int = -1, on_error: str = "fail", page_size: int = DEFAULT_PAGE_SIZE,
                   progress: bool = True, relabel_maps: Optional[str] = None,
                   relabel_field: Optional[LabelMapField] = None,
                   shard: Optional[tuple[int, int]] = None) -> WriteReport:
    """Write ``data_dir/<split>`` (or ``data_dir`` itself when it already holds the class folders
    and ``split`` is None) to ``out`` with fields ``image`` and ``label``.

    ``limit`` keeps the first N samples of torchvision's order (a quick subset).
    ``relabel_maps``: a folder of ReLabel's per-image label maps (``<wnid>/<stem>.pt``, see
    fastdata.writers.relabel), stored in a third field ``relabel`` (``relabel_field``, default
    LabelMapField(5, 15, 15)); an image whose map is missing or malformed fails like an
    undecodable image (``on_error``).  Needs torch.
    ``shard=(K, N)`` writes only shard K of N: the contiguous range of records
    fastdata.shards.shard_range gives (after ``limit``), labelled from the full class list and
    numbered by their index in the whole folder (proportion mode's draws follow it), so the N
    files read together (``Loader([...])``, ``fastdata merge``) hold the records one write of the
    whole folder holds, in the same order."""
    root = os.path.join(data_dir, split) if split else data_dir
    if split and not os.path.isdir(root):
        raise ValueError(f"{data_dir} has no '{split}' folder")
    folder = ImageNetFolder.scan(root)
    samples = folder.samples[:limit] if limit else folder.samples
    fields = {"image": image_field or RGBImageField(), "label": IntField()}
    dataset = samples
    if relabel_maps is not None:
        from .relabel import RelabelSamples
        fields["relabel"] = relabel_field or LabelMapField()
        dataset = RelabelSamples(samples, folder.classes, relabel_maps, fields["relabel"])
    writer = DatasetWriter(out, fields, page_size=page_size, num_workers=num_workers,
                           on_error=on_error, progress=progress)
    records = None if shard is None else shard_range(len(samples), *shard)
    # Paths go to the image field, which reads and decodes them in the worker threads (this
    # project's code, thread-safe: no worker processes needed).
    return writer.from_indexed_dataset(dataset, indices=records, chunksize=8,
                                       describe=lambda i: samples[i][0], worker_type="thread")
