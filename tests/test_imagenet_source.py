"""ImageNet-style folders are labelled and ordered exactly as torchvision's ImageFolder does.

torchvision is not a dependency, so its algorithm (``find_classes`` + ``make_dataset`` in
torchvision/datasets/folder.py) is restated here, with one documented difference of fastdata's:
hidden entries (names starting with '.') are skipped.
"""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from fastdata import Reader, RGBImageField
from fastdata.writers import ImageNetFolder, find_classes, write_imagenet

# torchvision.datasets.folder.IMG_EXTENSIONS
TORCHVISION_IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff",
                              ".webp")

CLASSES = ["B", "a", "a_b", "a-b", "10", "9", "Zebra", "élan"]

# Per class: files (relative to the class folder).  Nested folders whose names sort differently
# as paths than in a depth-first walk ("sub/deep" vs "sub-2"), mixed-case extensions, names that
# sort differently by case or digits, non-image files and hidden entries.
CLASS_FILES = [
    "x.JPEG", "Y.jpg", "b.Png", "A.jpeg", "10.jpg", "9.jpg", "_u.JPG", "-d.jpeg", "é.png",
    "pic.bmp", "notes.txt", "labels.json", "img.jpeg.txt", "README",
    "sub/1.jpg", "sub/deep/3.JPEG", "sub-2/2.PNG", "sub_z/4.jpg", "Sub/5.jpg",
    ".hidden.jpg", "._x.JPEG", ".DS_Store", ".cache/6.jpg", "sub/.ipynb_checkpoints/7.jpg",
]


def torchvision_samples(root: str) -> tuple[list[str], list[tuple[str, int]]]:
    """torchvision's ImageFolder (classes, samples) for ``root``, skipping hidden entries."""
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    class_to_idx = {name: i for i, name in enumerate(classes)}
    samples = []
    for target_class in sorted(class_to_idx):
        target_dir = os.path.join(root, target_class)
        for dirpath, _, fnames in sorted(os.walk(target_dir, followlinks=True)):
            rel = os.path.relpath(dirpath, target_dir)
            if any(part.startswith(".") for part in rel.split(os.sep) if part != "."):
                continue
            for fname in sorted(fnames):
                if fname.startswith("."):
                    continue
                if fname.lower().endswith(TORCHVISION_IMG_EXTENSIONS):
                    samples.append((os.path.join(dirpath, fname), class_to_idx[target_class]))
    return classes, samples


def image_bytes(name: str, width: int) -> bytes:
    """An image in the format its extension names, ``width`` pixels wide (the width identifies
    the file after a write)."""
    ext = os.path.splitext(name)[1].lower()
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP"}.get(ext, "JPEG")
    pixels = np.full((6, width, 3), (width * 7) % 256, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt)
    return buf.getvalue()


@pytest.fixture
def tricky_folder(tmp_path):
    """``data/train/<class>/...``; returns (train root, {visible image path: width})."""
    root = tmp_path / "data" / "train"
    widths = {}
    next_width = 8
    for cls in CLASSES:
        for rel in CLASS_FILES:
            path = os.path.join(str(root), cls, *rel.split("/"))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if rel.lower().endswith(TORCHVISION_IMG_EXTENSIONS):
                data = image_bytes(rel, next_width)
                if not any(part.startswith(".") for part in rel.split("/")):
                    widths[path] = next_width     # hidden images are valid, but skipped
                next_width += 1
            else:
                data = b"not an image\n"
            with open(path, "wb") as f:
                f.write(data)
    # A symlinked folder inside a class: torchvision walks with followlinks=True.
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    linked = outside / "linked.jpg"
    linked.write_bytes(image_bytes("linked.jpg", next_width))
    try:
        os.symlink(str(outside), os.path.join(str(root), "a", "link"))
        widths[os.path.join(str(root), "a", "link", "linked.jpg")] = next_width
    except (OSError, NotImplementedError):
        pass
    return str(root), widths


def test_classes_sort_like_torchvision(tricky_folder):
    root, _ = tricky_folder
    classes, class_to_idx = find_classes(root)
    assert classes == ["10", "9", "B", "Zebra", "a", "a-b", "a_b", "élan"]
    assert classes == sorted(CLASSES)
    assert class_to_idx == {name: i for i, name in enumerate(classes)}


def test_scan_matches_torchvision(tricky_folder):
    root, widths = tricky_folder
    expected_classes, expected = torchvision_samples(root)
    folder = ImageNetFolder.scan(root)
    assert folder.classes == expected_classes
    assert folder.samples == expected
    assert len(folder) == len(expected) == len(widths)
    assert [folder[i] for i in range(len(folder))] == expected
    # the sort is by path, not depth-first: "sub-2" comes before "sub/deep"
    a_paths = [os.path.relpath(p, os.path.join(root, "a")) for p, _ in expected
               if p.startswith(os.path.join(root, "a") + os.sep)]
    assert a_paths.index(os.path.join("sub-2", "2.PNG")) < \
        a_paths.index(os.path.join("sub", "deep", "3.JPEG"))
    assert not any("notes" in p or os.sep + "." in p for p, _ in folder.samples)


def test_written_labels_and_order_match_torchvision(tricky_folder, tmp_path):
    root, widths = tricky_folder
    _, expected = torchvision_samples(root)
    out = tmp_path / "out.beton"
    report = write_imagenet(os.path.dirname(root), str(out), split="train",
                            image_field=RGBImageField(write_mode="raw"), num_workers=2,
                            on_error="fail", progress=False)
    assert report.num_written == len(expected) and report.failures == []
    with Reader(out) as reader:
        assert len(reader) == len(expected)
        got = [(reader.read(i, "label"), reader.read(i, "image").shape[1])
               for i in range(len(reader))]
    assert got == [(label, widths[path]) for path, label in expected]


def test_split_none_and_limit(tricky_folder, tmp_path):
    root, widths = tricky_folder
    _, expected = torchvision_samples(root)
    out = tmp_path / "subset.beton"
    report = write_imagenet(root, str(out), split=None, limit=30, num_workers=1,
                            progress=False)
    assert report.num_written == 30
    with Reader(out) as reader:
        got = [(reader.read(i, "label"), reader.read(i, "image").shape[1])
               for i in range(len(reader))]
    assert got == [(label, widths[path]) for path, label in expected[:30]]


def test_missing_split_folder_is_an_error(tricky_folder, tmp_path):
    root, _ = tricky_folder
    with pytest.raises(ValueError, match="'val'"):
        write_imagenet(os.path.dirname(root), str(tmp_path / "out.beton"), split="val",
                       progress=False)
    assert not (tmp_path / "out.beton").exists()
