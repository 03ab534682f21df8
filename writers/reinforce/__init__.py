"""Dataset Reinforcement writers: add a ReinforcementField (stored augmentations + teacher top-k)
to an existing .beton file, written as a NEW file with the input's fields copied byte for byte
(images keep their stored JPEG/raw bytes and original-size side table; nothing is re-encoded).

- ``reinforce(data_path, teacher, out, num_augs, top_k, ...)`` (``teacher.py``): draws NS
  RandomResizedCrop + flip augmentations per image, and optionally mixup/cutmix
  (``sampling.py``), renders each exactly as ``fastdata.ops.replay.ReplayedCrop`` will replay it
  (``render.py``), runs the teacher on the batch and keeps its top-k softmax probabilities.
- ``import_imagenet_plus(data_path, records_dir, out, ...)`` (``ml_dr.py``): converts ml-dr's
  released ``<records_dir>/<index>.pth.tar`` files (``torch.save((index, [record, ...]))``).
- ``copied.py``: the input's fields written again as stored; ``cli.py``: ``fastdata write
  reinforce``.

Importing this package does not import torch; both writers do when called.
"""
from .cli import add_subcommand, run
from .ml_dr import import_imagenet_plus, parse_ml_dr_record
from .teacher import reinforce, resolve_teacher

__all__ = ["reinforce", "resolve_teacher", "import_imagenet_plus", "parse_ml_dr_record",
           "add_subcommand", "run"]
