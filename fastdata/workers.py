"""How many worker threads ``num_workers`` means, for the writer and the Loader alike."""
from __future__ import annotations

import os
from typing import Optional


def default_workers() -> int:
    """All the cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def resolve_workers(num_workers: Optional[int]) -> int:
    """The number of worker threads ``num_workers`` asks for, as the writer and the Loader read
    it: -1 (or None) every core this process may use, 0 none (the calling thread does the work,
    as torch's DataLoader with num_workers=0), n > 0 that many.  ValueError otherwise."""
    if num_workers is None or (not isinstance(num_workers, bool) and num_workers == -1):
        return default_workers()
    if isinstance(num_workers, bool) or int(num_workers) != num_workers or num_workers < 0:
        raise ValueError(f"num_workers must be -1 (every core), 0 (no worker threads) or a "
                         f"positive number of threads, got {num_workers!r}")
    return int(num_workers)
