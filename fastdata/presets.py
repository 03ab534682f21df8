"""Ready-made loaders for the common case (the FFCV ImageNet recipe's pipelines)."""
from __future__ import annotations

from typing import Any, Optional

import torch

from .constants import IMAGENET_MEAN, IMAGENET_STD
from .loader import Loader
from .ops.decoders import IntDecoder
from .ops.image_decoders import DEFAULT_CROP_RATIO, CenterCrop, RandomHorizontalFlip, \
    RandomResizedCrop
from .ops.tensor import Normalize, Squeeze, ToDevice, ToTensor, ToTorchImage
from .order import OrderOption


def imagenet_loader(path: str, train: bool = True, resolution: int = 224, batch_size: int = 256,
                    device: Any = "cpu", dtype: Optional[torch.dtype] = torch.float32,
                    num_workers: int = -1, seed: int = 0, distributed: bool = False,
                    order: Optional[Any] = None, batches_ahead: int = 3,
                    **loader_kwargs: Any) -> Loader:
    """A Loader of (images, labels) from a file with ``image`` and ``label`` fields.

    train: RandomResizedCrop(resolution) + RandomHorizontalFlip, random order, drop_last;
    else: CenterCrop(resolution) with torchvision's box (Resize(floor(resolution * 256 / 224))
    + CenterCrop(resolution)), sequential order, every sample.
    Images are [B, 3, H, W] channels_last on ``device``, normalised with ImageNet's mean and std
    to ``dtype`` (None keeps uint8); labels are int64 [B]."""
    decoder = RandomResizedCrop(resolution) if train else CenterCrop(resolution,
                                                                     DEFAULT_CROP_RATIO)
    image = [decoder] + ([RandomHorizontalFlip()] if train else []) + \
        [ToTensor(), ToDevice(device), ToTorchImage()]
    if dtype is not None:
        image.append(Normalize(IMAGENET_MEAN, IMAGENET_STD, dtype))
    label = [IntDecoder(), ToTensor(), Squeeze(), ToDevice(device)]
    if order is None:
        order = OrderOption.RANDOM if train else OrderOption.SEQUENTIAL
    return Loader(path, batch_size=batch_size, num_workers=num_workers, order=order, seed=seed,
                  distributed=distributed, pipelines={"image": image, "label": label},
                  drop_last=train, batches_ahead=batches_ahead, **loader_kwargs)
