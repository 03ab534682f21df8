"""Field types: one module each.  TYPE_IDS maps a descriptor's type id to its class.

Ids 0-6 are FFCV's (byte-compatible); fastdata's own types take ids FFCV does not use (>= 100;
FFCV reserves 255 for custom fields that a reader must be told about by name)."""
from .base import Encoded, Field, RegionTable
from .basics import FloatField, IntField
from .bytes import BytesField
from .json import JSONField
from .label_map import LabelMap, LabelMapField
from .ndarray import NDArrayField
from .reinforce import ReinforcementField
from .rgb_image import RGBImageField
from .topk import TopKField
from .torch_tensor import TorchTensorField

TYPE_IDS = {cls.TYPE_ID: cls for cls in (FloatField, IntField, RGBImageField, BytesField,
                                          NDArrayField, JSONField, TorchTensorField,
                                          LabelMapField, TopKField, ReinforcementField)}
CUSTOM_TYPE_ID = 255

__all__ = ["Encoded", "Field", "RegionTable", "FloatField", "IntField", "RGBImageField",
           "BytesField", "NDArrayField", "JSONField", "TorchTensorField", "LabelMap",
           "LabelMapField", "TopKField", "ReinforcementField", "TYPE_IDS",
           "CUSTOM_TYPE_ID"]
