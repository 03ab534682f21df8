"""Any indexable Python dataset whose items are tuples in field order (like FFCV's
``DatasetWriter.from_indexed_dataset``): ``len(ds)`` and ``ds[i] -> (value, value, ...)``.

Image values may be PIL images, uint8 arrays, encoded image bytes or file paths.  Items are
loaded by worker processes (threads for a list or tuple, or with ``worker_type='thread'``), so
that a ``__getitem__`` using process-global state such as numpy's global RNG gives each record
exactly ``ds[i]``; see ``DatasetWriter.from_indexed_dataset``."""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from fastdata import DatasetWriter, Field, WriteReport
from fastdata.constants import DEFAULT_PAGE_SIZE
from fastdata.shards import shard_range


def write_indexed_dataset(dataset: Any, out: str, fields: Mapping[str, Field],
                          indices: Optional[Sequence[int]] = None, num_workers: int = -1,
                          on_error: str = "fail", page_size: int = DEFAULT_PAGE_SIZE,
                          progress: bool = True, chunksize: int = 100,
                          worker_type: Optional[str] = None,
                          shard: Optional[tuple[int, int]] = None) -> WriteReport:
    """Write ``dataset[i]`` for each i of ``indices`` (default: all) to ``out``;
    ``shard=(K, N)`` writes only shard K of N of those (fastdata.shards.shard_range of them)."""
    if shard is not None:
        chosen = range(len(dataset)) if indices is None else list(indices)
        indices = [chosen[j] for j in shard_range(len(chosen), *shard)]
    writer = DatasetWriter(out, fields, page_size=page_size, num_workers=num_workers,
                           on_error=on_error, progress=progress)
    return writer.from_indexed_dataset(dataset, indices=indices, chunksize=chunksize,
                                       worker_type=worker_type)
