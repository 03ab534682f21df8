"""FFCV's import paths, served by fastdata: switch a training script by changing ``ffcv`` to
``fastdata.ffcv`` in its imports.

``from fastdata.ffcv.fields.decoders import IntDecoder`` (or any other module path of FFCV 1.0.2's
public API in ``MODULES``) gives fastdata's object of that name.  The modules are made on import
from the table below, so there is one place that says where each FFCV name lives in fastdata.
FFCV's internals (memory managers, the code generator's graph, traversal-order classes, its C
extension) have no counterpart here: importing them raises ImportError saying what to use.
Everything resolves on first use, so importing this package does not import torch.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types

_FIELDS = {"Field": "fastdata.fields", "BytesField": "fastdata.fields",
           "IntField": "fastdata.fields", "FloatField": "fastdata.fields",
           "RGBImageField": "fastdata.fields", "NDArrayField": "fastdata.fields",
           "JSONField": "fastdata.fields", "TorchTensorField": "fastdata.fields"}
_DECODERS = {name: "fastdata.ops" for name in (
    "FloatDecoder", "IntDecoder", "NDArrayDecoder", "RandomResizedCropRGBImageDecoder",
    "CenterCropRGBImageDecoder", "SimpleRGBImageDecoder", "BytesDecoder")}
_TRANSFORM_MODULES = {
    "ops": ("ToTensor", "ToDevice", "ToTorchImage", "Convert", "View"),
    "common": ("Squeeze",),
    "flip": ("RandomHorizontalFlip",),
    "normalize": ("NormalizeImage",),
    "cutout": ("Cutout",),
    "translate": ("RandomTranslate",),
    "mixup": ("ImageMixup", "LabelMixup", "MixupToOneHot"),
    "module": ("ModuleWrapper",),
    "poisoning": ("Poison",),
    "replace_label": ("ReplaceLabel",),
    "color_jitter": ("RandomBrightness", "RandomContrast", "RandomSaturation"),
    "random_resized_crop": ("RandomResizedCrop",),
}
_TRANSFORMS = {name: "fastdata.ops" for names in _TRANSFORM_MODULES.values() for name in names}
# FFCV's transform of decoded images; fastdata's RandomResizedCrop is the cropping decoder.
_TRANSFORMS["RandomResizedCrop"] = "fastdata.ops:RandomResizedCropOfImages"
_PIPELINE = {"Operation": "fastdata.ops.ffcv_operation", "State": "fastdata.ops.ffcv_operation",
             "AllocationQuery": "fastdata.ops.ffcv_operation",
             "Compiler": "fastdata.ops.ffcv_operation"}


def _only(table: dict, *names: str) -> dict:
    return {name: table[name] for name in names}


#: FFCV module path (below ``ffcv``) -> {name: fastdata module that holds it, or
#: "module:attribute" where fastdata's name differs}.
MODULES: dict[str, dict[str, str]] = {
    "": {"Loader": "fastdata.ffcv.loader", "DatasetWriter": "fastdata.writer"},
    "loader.loader": {"Loader": "fastdata.ffcv.loader", "OrderOption": "fastdata.order",
                      "ORDER_TYPE": "fastdata.ffcv.loader"},
    "writer": {"DatasetWriter": "fastdata.writer"},
    "reader": {"Reader": "fastdata.reader"},
    "fields": _FIELDS,
    "fields.base": _only(_FIELDS, "Field"),
    "fields.basics": {**_only(_FIELDS, "IntField", "FloatField"),
                      **_only(_DECODERS, "IntDecoder", "FloatDecoder")},
    "fields.rgb_image": {**_only(_FIELDS, "RGBImageField"),
                         **_only(_DECODERS, "SimpleRGBImageDecoder",
                                 "RandomResizedCropRGBImageDecoder",
                                 "CenterCropRGBImageDecoder")},
    "fields.bytes": {**_only(_FIELDS, "BytesField"), **_only(_DECODERS, "BytesDecoder")},
    "fields.ndarray": {**_only(_FIELDS, "NDArrayField", "TorchTensorField"),
                       **_only(_DECODERS, "NDArrayDecoder")},
    "fields.json": _only(_FIELDS, "JSONField"),
    "fields.decoders": _DECODERS,
    "transforms": _TRANSFORMS,
    **{f"transforms.{module}": _only(_TRANSFORMS, *names)
       for module, names in _TRANSFORM_MODULES.items()},
    "pipeline": _only(_PIPELINE, "Compiler"),
    "pipeline.operation": _only(_PIPELINE, "Operation"),
    "pipeline.state": _only(_PIPELINE, "State"),
    "pipeline.allocation_query": _only(_PIPELINE, "AllocationQuery"),
    "pipeline.compiler": _only(_PIPELINE, "Compiler"),
}

#: FFCV internals without a counterpart, and what to use instead.
INTERNALS: dict[str, str] = {
    "memory_managers": "fastdata reads through a memory map (os_cache=True) or process memory "
                       "(os_cache=False); see fastdata.reader.Reader",
    "memory_allocator": "fastdata.writer.DatasetWriter lays out pages itself",
    "libffcv": "fastdata has no C extension; the pixel kernels are in fastdata.pixels",
    "traversal_order": "pass order='sequential' | 'random' | 'quasi_random' (fastdata.order)",
    "pipeline.graph": "fastdata generates no code: a pipeline is [decoder, *batch ops] "
                      "(fastdata.ops.base)",
    "pipeline.pipeline": "fastdata generates no code: a pipeline is [decoder, *batch ops] "
                         "(fastdata.ops.base)",
    "pipeline.pipeline_spec": "pipelines are dicts of lists; MultiView gives several outputs "
                              "from one field (fastdata.ops.MultiView)",
    "loader.epoch_iterator": "fastdata.loader.EpochIterator",
    "benchmarks": "bench/ in the fastdata repository",
}


class _CompatModule(types.ModuleType):
    """A module of FFCV's path whose names resolve, on first use, to fastdata's objects."""

    def __init__(self, name: str, table: dict[str, str]):
        super().__init__(name, f"FFCV's {name.replace('fastdata.ffcv', 'ffcv')}, from fastdata.")
        self._table = table
        self.__all__ = sorted(table)

    def __getattr__(self, name: str):
        table = self.__dict__.get("_table", {})
        if name not in table:
            raise AttributeError(f"{self.__name__} has no attribute {name!r} (fastdata provides "
                                 f"{sorted(table)} here)")
        module, _, attribute = table[name].partition(":")
        value = getattr(importlib.import_module(module), attribute or name)
        setattr(self, name, value)
        return value

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._table))


class _CompatFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Makes ``fastdata.ffcv.<FFCV module path>`` modules from MODULES."""

    PREFIX = __name__ + "."

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith(self.PREFIX):
            return None
        sub = fullname[len(self.PREFIX):]
        if sub == "loader":
            return None             # a real package (fastdata/ffcv/loader): FFCV's defaults
        if sub in MODULES or any(key.startswith(sub + ".") for key in MODULES):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        for internal, instead in INTERNALS.items():
            if sub == internal or sub.startswith(internal + "."):
                raise ImportError(f"ffcv.{sub} is FFCV's internals; fastdata has no "
                                  f"counterpart: {instead}", name=fullname)
        return None

    def create_module(self, spec):
        module = _CompatModule(spec.name, MODULES.get(spec.name[len(self.PREFIX):], {}))
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


if not any(isinstance(f, _CompatFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _CompatFinder())

__all__ = sorted(MODULES[""])


def __getattr__(name: str):
    if name in MODULES[""]:
        return getattr(importlib.import_module(MODULES[""][name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
