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


def relabel_cutmix(num_classes: int = 1000, resolution: int = 224, image: str = "image",
                   relabel: str = "relabel", cutmix_alpha: float = 1.0,
                   mixup_alpha: float = 0.0, label_smoothing: float = 0.0,
                   region_labels: bool = True, **mixup_options: Any
                   ) -> tuple[dict[str, list], list]:
    """ReLabel soft labels with CutMix, wired once: ``(pipelines, batch_ops)`` for a Loader.

    pipelines: ``image`` -> RandomResizedCrop(resolution) + RandomHorizontalFlip, uint8
    [B, 3, H, W]; ``relabel`` -> LabelMapPool(image, num_classes): float32 [B, num_classes]
    targets pooled over each crop.  batch_ops: a Mixup that mixes those targets
    (``label=relabel``) by the corrected CutMix area; with ``region_labels`` (default) the pasted
    region is labelled from the partner's own map pooled over that region
    (``region_target=`` the pipeline's LabelMapPool), else by the partner's whole-crop target.
    ``mixup_options`` go to Mixup (mode, prob, switch_prob, ...).  Add the file's other fields
    to the pipelines (or None to drop them) before making the Loader::

        pipelines, batch_ops = relabel_cutmix(1000)
        loader = Loader(path, 256, order="random", pipelines={**pipelines, "label": None},
                        batch_ops=batch_ops)
    """
    from .ops.mix import Mixup
    from .ops.relabel import LabelMapPool
    pool = LabelMapPool(image=image, num_classes=num_classes)
    pipelines = {image: [RandomResizedCrop(resolution), RandomHorizontalFlip(), ToTensor(),
                         ToTorchImage()],
                 relabel: [pool, ToTensor()]}
    mix = Mixup(mixup_alpha, cutmix_alpha, label_smoothing=label_smoothing,
                num_classes=num_classes, image=image, label=relabel,
                region_target=pool if region_labels else None, **mixup_options)
    return pipelines, [mix]
