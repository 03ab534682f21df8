"""The recipe's fastdata loaders (FFCV's create_train_loader / create_val_loader), with the
label-aware switches: Mixup/CutMix, ReLabel soft labels, replayed dataset reinforcement.

Pipelines are given in the file's field order, and every other field is dropped (None), so the
outputs come in the same order whether the Loader orders them by the pipelines dict or by the
file.  ``TrainData.split(batch)`` returns (images, target): target is int64 [B] labels, or
float32 [B, C] soft targets whose rows sum to 1.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
import torch

import fastdata
from fastdata.ops import (CenterCropRGBImageDecoder, IntDecoder, NormalizeImage,
                          RandomHorizontalFlip, RandomResizedCropRGBImageDecoder, Squeeze,
                          ToDevice, ToTensor, ToTorchImage)

# FFCV's train_imagenet.py constants (pixel units).
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406]) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225]) * 255
DEFAULT_CROP_RATIO = 224 / 256


class DataError(ValueError):
    """A dataset file that is missing, unreadable, or lacks what the run needs."""


def open_checked(path: str, role: str, needs: Sequence[str]) -> fastdata.Reader:
    """Open ``path`` and check it has the fields ``needs``; DataError names file and problem."""
    import os
    if not os.path.exists(path):
        raise DataError(f"{role} dataset {path}: no such file")
    if not os.path.isfile(path):
        raise DataError(f"{role} dataset {path}: not a file")
    try:
        reader = fastdata.Reader(path)
    except Exception as e:     # FormatError and OSError: both mean "not a readable .beton"
        raise DataError(f"{role} dataset {path}: not a readable .beton file "
                        f"({type(e).__name__}: {e})") from None
    missing = [n for n in needs if n not in reader.field_names]
    if missing:
        reader.close()
        raise DataError(f"{role} dataset {path}: no field {', '.join(map(repr, missing))} "
                        f"(it has {reader.field_names})")
    return reader


def num_classes_of(path: str) -> int:
    """1 + the largest label of the file's ``label`` field."""
    with open_checked(path, "train", ["label"]) as reader:
        labels = np.asarray(reader.column("label")).astype(np.int64).reshape(-1)
    if not len(labels) or labels.min() < 0:
        raise DataError(f"train dataset {path}: labels must be non-negative integers")
    return int(labels.max()) + 1


@dataclass
class LabelOptions:
    """The label-aware switches (timm's train.py names for Mixup/CutMix)."""
    mixup: float = 0.0
    cutmix: float = 0.0
    cutmix_minmax: Optional[Sequence[float]] = None
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    mixup_mode: str = "batch"
    mixup_off_epoch: Optional[int] = None
    relabel: bool = False
    reinforce: bool = False
    densify: str = "smooth"

    @property
    def mixing(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0 or self.cutmix_minmax is not None

    def check(self, batch_size: int) -> None:
        if self.reinforce and (self.mixing or self.relabel):
            raise ValueError("--reinforce replays the mixing and targets stored in the file; "
                             "it can't be combined with --mixup/--cutmix/--relabel")
        if self.mixing and batch_size % 2:
            raise ValueError(f"Mixup/CutMix pair element i with B-1-i (as timm): the batch size "
                             f"per process must be even, got {batch_size}")


@dataclass
class TrainData:
    loader: fastdata.Loader
    decoder: Any                      # the op whose output_size progressive resizing sets
    names: list[str]                  # output names, in output order
    target_name: str
    extra: dict = field(default_factory=dict)

    def split(self, batch: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        out = dict(zip(self.names, batch))
        return out["image"], out[self.target_name]

    def set_resolution(self, res: int) -> None:
        """Progressive resizing, as FFCV: the decoder's output size, set between epochs."""
        self.decoder.output_size = (res, res)


def _ordered(reader_fields: Sequence[str], pipelines: dict) -> tuple[dict, list[str]]:
    ordered = {n: pipelines.get(n) for n in reader_fields}
    return ordered, [n for n in reader_fields if ordered[n] is not None]


def train_data(path: str, *, res: int, batch_size: int, num_workers: int, device: torch.device,
               dtype: torch.dtype, distributed: bool, seed: int, num_classes: int,
               label_smoothing: float, labels: LabelOptions, in_memory: bool = True,
               order: Optional[str] = None, backend: str = "cpu") -> TrainData:
    """FFCV's train loader: RandomResizedCrop((res, res)) + flip, normalised to ``dtype`` on
    ``device``; order RANDOM when distributed else QUASI_RANDOM (FFCV's), drop_last.  With
    ``labels``: Mixup/CutMix (timm's semantics, label smoothing inside the mix), ReLabel
    (``relabel`` field: LabelMapPool targets; with CutMix the pasted region is labelled from the
    partner's own map), or dataset reinforcement (``reinforce`` field: ReplayedCrop +
    ReplayTargets)."""
    from fastdata.ops import Mixup
    needs = ["image"] + (["reinforce"] if labels.reinforce else
                         ["relabel"] if labels.relabel else ["label"])
    reader = open_checked(path, "train", needs)
    fields = list(reader.field_names)
    reader.close()
    labels.check(batch_size)
    normalize = [ToTensor(), ToDevice(device, non_blocking=True), ToTorchImage(),
                 NormalizeImage(IMAGENET_MEAN, IMAGENET_STD, dtype)]
    batch_ops: list = []
    if labels.reinforce:
        from fastdata.ops import ReplayedCrop, ReplayTargets
        decoder = ReplayedCrop((res, res), backend=backend)
        pipelines = {"image": [decoder] + normalize,
                     "reinforce": [ReplayTargets(num_classes, labels.densify, image="image"),
                                   ToDevice(device, non_blocking=True)]}
        target = "reinforce"
    else:
        decoder = RandomResizedCropRGBImageDecoder((res, res), backend=backend)
        pipelines = {"image": [decoder, RandomHorizontalFlip()] + normalize}
        mix_options = dict(cutmix_minmax=labels.cutmix_minmax, prob=labels.mixup_prob,
                           switch_prob=labels.mixup_switch_prob, mode=labels.mixup_mode,
                           num_classes=num_classes, off_epoch=labels.mixup_off_epoch)
        if labels.relabel:
            from fastdata.ops import LabelMapPool
            pool = LabelMapPool(image="image", num_classes=num_classes)
            pipelines["relabel"] = [pool, ToTensor(), ToDevice(device, non_blocking=True)]
            target = "relabel"
            if labels.mixing:
                # ReLabel's recipe has no extra smoothing; the pasted region is labelled from
                # the partner's map pooled over that region.
                batch_ops.append(Mixup(labels.mixup, labels.cutmix, label="relabel",
                                       label_smoothing=0.0, region_target=pool, **mix_options))
        else:
            pipelines["label"] = [IntDecoder(), ToTensor(), Squeeze(),
                                  ToDevice(device, non_blocking=True)]
            target = "label"
            if labels.mixing:
                batch_ops.append(Mixup(labels.mixup, labels.cutmix,
                                       label_smoothing=label_smoothing, **mix_options))
    pipelines, names = _ordered(fields, pipelines)
    if order is None:
        order = "random" if distributed else "quasi_random"
    loader = fastdata.Loader(path, batch_size=batch_size, num_workers=num_workers, order=order,
                             seed=seed, distributed=distributed, pipelines=pipelines,
                             batch_ops=batch_ops, drop_last=True, os_cache=in_memory)
    if len(loader) == 0:
        raise DataError(f"train dataset {path}: {len(loader.indices)} samples over "
                        f"{loader.world_size} process(es) give no full batch of {batch_size}")
    return TrainData(loader, decoder, names, target)


def val_data(path: str, *, res: int, batch_size: int, num_workers: int, device: torch.device,
             dtype: torch.dtype, distributed: bool, in_memory: bool = True) -> TrainData:
    """FFCV's validation loader: CenterCropRGBImageDecoder((res, res), ratio=224/256) (FFCV's
    box), sequential, every sample (distributed: padded to a multiple of the world size by
    repeating the first samples, as torch's DistributedSampler and FFCV)."""
    reader = open_checked(path, "validation", ["image", "label"])
    fields = list(reader.field_names)
    reader.close()
    decoder = CenterCropRGBImageDecoder((res, res), ratio=DEFAULT_CROP_RATIO)
    pipelines = {"image": [decoder, ToTensor(), ToDevice(device, non_blocking=True),
                           ToTorchImage(), NormalizeImage(IMAGENET_MEAN, IMAGENET_STD, dtype)],
                 "label": [IntDecoder(), ToTensor(), Squeeze(),
                           ToDevice(device, non_blocking=True)]}
    pipelines, names = _ordered(fields, pipelines)
    loader = fastdata.Loader(path, batch_size=batch_size, num_workers=num_workers,
                             order="sequential", distributed=distributed, pipelines=pipelines,
                             drop_last=False, os_cache=in_memory)
    return TrainData(loader, decoder, names, "label")
