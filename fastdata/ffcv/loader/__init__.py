"""FFCV's ``ffcv.loader``: fastdata's Loader with FFCV's defaults."""
from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Sequence, Union

from ...loader import Loader as _Loader
from ...order import OrderOption

#: FFCV's name for what ``order`` accepts.
ORDER_TYPE = Union[OrderOption, str]


class Loader(_Loader):
    """fastdata.Loader with FFCV's defaults where they differ from fastdata's: ``seed=None``
    (a seed drawn per run, as FFCV draws it) and ``rank_split="interleaved"`` (torch's
    DistributedSampler, as FFCV shards).  Everything else is fastdata.Loader's."""

    def __init__(self, fname: Union[str, os.PathLike], batch_size: int, num_workers: int = -1,
                 os_cache: bool = True, order: Any = OrderOption.SEQUENTIAL,
                 distributed: bool = False, seed: Optional[int] = None,
                 indices: Optional[Sequence[int]] = None,
                 pipelines: Optional[Mapping[str, Optional[Sequence[Any]]]] = None,
                 custom_fields: Optional[Mapping[str, type]] = None, drop_last: bool = True,
                 batches_ahead: int = 3, recompile: bool = False, *,
                 rank_split: str = "interleaved", **fastdata_options: Any):
        super().__init__(fname, batch_size, num_workers, os_cache, order, distributed, seed,
                         indices, pipelines, custom_fields, drop_last, batches_ahead, recompile,
                         rank_split=rank_split, **fastdata_options)


__all__ = ["Loader", "OrderOption", "ORDER_TYPE"]
