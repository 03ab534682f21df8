"""Numbers that more than one module relies on, said once."""

# ImageNet's per-channel RGB statistics (torchvision's), in 0-1 units: Normalize's default, the
# preset pipelines' and the reinforce writer's teacher input.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Class ids are stored as int16 (TopKField, LabelMapField, ReinforcementField): 0 .. 32767.
MAX_CLASS_ID = 32767

# Most teacher outputs kept per sample (TopKField's k, ReinforcementField's top_k).
MAX_TOP_K = 4096

# Bytes per data page of a new file: 8 MiB, FFCV's default.
DEFAULT_PAGE_SIZE = 1 << 23
