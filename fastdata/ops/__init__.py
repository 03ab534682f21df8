"""Pipeline steps.  A field's pipeline is ``[decoder, *batch_ops]`` (see ops.base).

Decoders: image decoders (``image_decoders``: RandomResizedCrop, CenterCrop,
SimpleRGBImageDecoder, MultiView), the crop samplers whose typed records (``crops``:
CropParams) an image backend (``fastdata.backends``: ImageBackend, CPUBackend, ...) decodes,
and the others (``decoders``: IntDecoder, FloatDecoder, NDArrayDecoder, BytesDecoder,
JSONDecoder).
Batch ops: ``tensor`` (ToTensor, ToTorchImage, ToDevice, Normalize, NormalizeImage, Squeeze,
Convert, View, ModuleWrapper), RandomHorizontalFlip, FFCV's augmentations (``augment``: Cutout,
RandomTranslate, RandomBrightness, RandomContrast, RandomSaturation; ``poison``: Poison,
ReplaceLabel; ``ffcv_mixup``: ImageMixup, LabelMixup, MixupToOneHot), FFCV's extension point
(``ffcv_operation``: Operation, State, AllocationQuery, Compiler: FFCV-style custom ops; the base
of fastdata's own steps is ``base.Operation``), and label-aware ops: ``mix`` (Mixup with
CutMix, OneHot with label smoothing), ``targets`` (TeacherTargets from stored top-k outputs),
``relabel`` (LabelMapPool: ReLabel soft labels pooled over each crop), ``replay`` (ReplayedCrop,
ReplayTargets: dataset-reinforcement records replayed).  The compiled pixel work (codecs,
resampling, the CPU image kernel, mixing kernels) lives in ``fastdata.pixels``.

Names are imported on first use, so importing ``fastdata.ops`` does not import torch.
"""
import importlib

_WHERE = {
    "BatchContext": "base", "BatchOp": "base", "Decoder": "base", "Operation": "ffcv_operation",
    "BytesDecoder": "decoders", "FloatDecoder": "decoders", "IntDecoder": "decoders",
    "JSONDecoder": "decoders", "NDArrayDecoder": "decoders",
    "CenterCrop": "image_decoders", "CenterCropRGBImageDecoder": "image_decoders",
    "ImageDecoder": "image_decoders", "RandomHorizontalFlip": "image_decoders",
    "RandomResizedCrop": "image_decoders", "RandomResizedCropRGBImageDecoder": "image_decoders",
    "SimpleRGBImageDecoder": "image_decoders",
    "IMAGENET_MEAN": "tensor", "IMAGENET_STD": "tensor", "Convert": "tensor",
    "Normalize": "tensor", "NormalizeImage": "tensor", "Squeeze": "tensor", "ToDevice": "tensor",
    "ToTensor": "tensor", "ToTorchImage": "tensor", "MultiView": "image_decoders",
    "OneHot": "mix", "Mixup": "mix", "TeacherTargets": "targets",
    "LabelMapPool": "relabel", "LabelMapDecoder": "relabel",
    "ReplayedCrop": "replay", "ReplayTargets": "replay", "ReplayPlan": "replay",
    "CropParams": "crops", "CropView": "crops", "PastePlan": "crops",
    "MixPlan": "mix", "MixRecord": "mix",
    "ImageBackend": "fastdata.backends", "CPUBackend": "fastdata.backends",
    "register_default_decoder": "base", "default_decoder": "base",
    "Cutout": "augment", "RandomResizedCropOfImages": "augment", "RandomTranslate": "augment", "RandomBrightness": "augment",
    "RandomContrast": "augment", "RandomSaturation": "augment",
    "Poison": "poison", "ReplaceLabel": "poison",
    "ImageMixup": "ffcv_mixup", "LabelMixup": "ffcv_mixup", "MixupToOneHot": "ffcv_mixup",
    "View": "tensor", "ModuleWrapper": "tensor",
    "State": "ffcv_operation", "AllocationQuery": "ffcv_operation", "Compiler": "ffcv_operation",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        where = _WHERE[name]
        module = where if where.startswith("fastdata.") else f"{__name__}.{where}"
        return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
