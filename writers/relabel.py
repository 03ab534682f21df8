"""ReLabel's released label maps, read beside an ImageNet folder for a ``relabel`` field.

The maps (naver-ai/relabel_imagenet, ``relabel_imagenet.tar``) are one file per training image,
``<maps>/<wnid>/<image stem>.pt``: a ``torch.save`` of a [2, 5, 15, 15] tensor (row 0 the top-5
scores of each of 15 x 15 cells, row 1 their class ids as floats).

Files are loaded only with ``torch.load(path, map_location='cpu', weights_only=True)``: the
restricted unpickler rebuilds tensors and plain containers and refuses any other object, so a
hostile file cannot run code.  Each map is checked (a floating-point tensor of the field's
[2, k, H, W] shape, finite, whole class ids in range); a missing or malformed map makes its
sample fail with the map's path and the reason, so ``on_error='skip'`` leaves just that image out.
torch is imported only when maps are requested.
"""
from __future__ import annotations

import os
from typing import Any, Optional, Sequence

from fastdata.fields.label_map import LabelMap, LabelMapField


def require_torch() -> Any:
    """The torch module; ValueError (a user error) if it is not installed."""
    try:
        import torch
    except ImportError:
        raise ValueError("reading ReLabel maps needs PyTorch (pip install torch)") from None
    return torch


def map_path(maps_dir: str, wnid: str, image_path: str) -> str:
    """``<maps_dir>/<wnid>/<image file name without extension>.pt``."""
    stem = os.path.splitext(os.path.basename(image_path))[0]
    return os.path.join(maps_dir, wnid, stem + ".pt")


def _load_reason(err: BaseException) -> str:
    """A one-line reason from what torch.load raised."""
    if isinstance(err, FileNotFoundError):
        return "no such file (missing label map)"
    if isinstance(err, IsADirectoryError):
        return "is a folder, not a label-map file"
    if isinstance(err, EOFError):
        return "file is empty or truncated"
    text = str(err)
    if "Weights only load failed" in text:
        boilerplate = ("Weights only load failed", "Please file an issue",
                       "Check the documentation")
        details = [line.strip() for line in text.splitlines()
                   if line.strip() and not line.strip().startswith(boilerplate)]
        detail = details[0] if details else "unsupported content"
        return (f"torch.load(weights_only=True) refused it: it holds more than tensors "
                f"({detail.removeprefix('WeightsUnpickler error: ')})")
    first = text.split(". ")[0].splitlines()[0] if text else type(err).__name__
    return f"not a readable torch.save file ({type(err).__name__}: {first})"


def load_label_map(path: str, field: LabelMapField, torch: Optional[Any] = None) -> LabelMap:
    """Load and check one map file; ValueError naming ``path`` and what is wrong."""
    torch = torch or require_torch()
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except BaseException as err:   # unpickling, zip, I/O errors: all this sample's failure
        raise ValueError(f"relabel map {path}: {_load_reason(err)}") from None
    expected = (2, *field.map_shape)
    if not isinstance(obj, torch.Tensor):
        raise ValueError(f"relabel map {path}: holds a {type(obj).__name__}, not a tensor")
    if obj.layout != torch.strided:
        raise ValueError(f"relabel map {path}: a {obj.layout} tensor, not a dense one")
    if obj.dim() != 4 or tuple(obj.shape) != expected:
        raise ValueError(f"relabel map {path}: tensor of shape {list(obj.shape)}, expected "
                         f"{list(expected)} (scores and class ids, k, height, width)")
    if not obj.dtype.is_floating_point:
        raise ValueError(f"relabel map {path}: tensor of dtype {obj.dtype}, expected float16 or "
                         f"float32")
    if not bool(torch.isfinite(obj).all()):
        raise ValueError(f"relabel map {path}: holds NaN or infinite values")
    try:
        return field.validate(obj)
    except (ValueError, TypeError) as err:
        raise ValueError(f"relabel map {path}: {err}") from None


class RelabelSamples:
    """(image path, label, LabelMap) for each (path, label) of an ImageNet folder; the map is
    loaded when the writer's worker thread asks for the sample."""

    def __init__(self, samples: Sequence[tuple[str, int]], classes: Sequence[str],
                 maps_dir: str, field: Optional[LabelMapField] = None):
        if not os.path.isdir(maps_dir):
            raise ValueError(f"relabel maps folder {maps_dir} does not exist")
        if classes and not any(os.path.isdir(os.path.join(maps_dir, c)) for c in classes):
            raise ValueError(f"relabel maps folder {maps_dir} holds none of the class folders "
                             f"({classes[0]}, ...): expected <maps>/<wnid>/<image stem>.pt")
        self.samples = samples
        self.classes = list(classes)
        self.maps_dir = maps_dir
        self.field = field or LabelMapField()
        self.torch = require_torch()   # imported here, once, not in the worker threads

    def __len__(self) -> int:
        return len(self.samples)

    def map_path(self, index: int) -> str:
        path, label = self.samples[index]
        return map_path(self.maps_dir, self.classes[label], path)

    def __getitem__(self, index: int) -> tuple[str, int, LabelMap]:
        path, label = self.samples[index]
        return path, label, load_label_map(self.map_path(index), self.field, self.torch)
