"""fastdata: fast image loading for training vision models, compatible with FFCV's .beton files.

The pieces: ``format`` (the on-disk layout), ``fields`` (one module per field type),
``writer.DatasetWriter`` (parallel, atomic writes), ``reader.Reader`` (validated random access),
``pixels`` (codecs and pixel kernels: jpeg, images, resampling), ``loader.Loader`` and ``ops``
(the pipeline steps) and ``cli`` (the command line).
"""
from .fields import (BytesField, Field, FloatField, IntField, JSONField, LabelMapField,
                     NDArrayField, ReinforcementField, RGBImageField, TopKField,
                     TorchTensorField)
from .format import FormatError
from .reader import Reader, SampleError
from .writer import DatasetWriter, SampleFailure, WriteError, WriteReport

__version__ = "0.1.0"

# The loader needs torch; importing it only on first use keeps writing and reading torch-free.
_LAZY = {"Loader": "loader", "EpochIterator": "loader", "OrderOption": "order",
         "imagenet_loader": "presets"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["BytesField", "Field", "FloatField", "IntField", "JSONField", "LabelMapField",
           "TopKField", "ReinforcementField", "NDArrayField",
           "RGBImageField", "TorchTensorField", "FormatError", "Reader", "SampleError",
           "DatasetWriter", "SampleFailure", "WriteError", "WriteReport", "__version__",
           "Loader", "EpochIterator", "OrderOption", "imagenet_loader"]
