"""Epoch orders and distributed shards.

Every order is a pure function of (seed, epoch), the same on every rank; each rank then takes
its share of it.  Resuming is therefore exact from (seed, epoch, batch) alone.

Sharding (``world_size`` W > 1) of an epoch order of N samples, two splits (``rank_split``):

- ``"contiguous"`` (fastdata's default): rank r takes the r-th contiguous block, so under
  ``quasi_random`` each rank keeps the order's page locality.  ``drop_last=False`` pads the
  order to a multiple of W by repeating its first samples: every sample is seen at least once
  per epoch and ``(-N) % W`` of them twice; ``drop_last=True`` cuts it to a multiple of W: each
  sample is seen at most once and ``N % W`` are left out of that epoch (different ones each
  epoch under a random order).
- ``"interleaved"`` (torch's DistributedSampler with ``drop_last=False``, which FFCV uses):
  the order is always padded to a multiple of W by repeating its first samples, and rank r
  takes samples r, r + W, r + 2W, ...; ``drop_last`` then only drops a last partial batch.

When N is a multiple of W both give disjoint, complete coverage.  Within a rank, ``drop_last``
also drops a last partial batch.
"""
from __future__ import annotations

import enum
from typing import Optional, Union

import numpy as np
from numba import njit

from .rng import OP_ORDER


class OrderOption(enum.Enum):
    """How an epoch visits the samples (FFCV's names)."""
    SEQUENTIAL = "sequential"
    RANDOM = "random"
    QUASI_RANDOM = "quasi_random"


def as_order(order: Union[str, OrderOption, object]) -> OrderOption:
    """Accept OrderOption, its value or name in any case, or FFCV's OrderOption members."""
    if isinstance(order, OrderOption):
        return order
    name = getattr(order, "name", order)
    try:
        return OrderOption[str(name).upper()]
    except KeyError:
        raise ValueError(f"unknown order {order!r}; use one of "
                         f"{[o.value for o in OrderOption]}") from None


@njit(cache=True)
def _interleave_pages(page_starts: np.ndarray, samples: np.ndarray, page_order: np.ndarray,
                      buffer_pages: int, picks: np.ndarray) -> np.ndarray:
    """Visit pages in ``page_order``, keeping ``buffer_pages`` open at once and taking each next
    sample from an open page chosen by ``picks`` (uniform draws); samples within a page are
    already shuffled."""
    out = np.empty(len(samples), dtype=np.int64)
    open_pages = np.empty(buffer_pages, dtype=np.int64)
    consumed = np.zeros(len(page_starts) - 1, dtype=np.int64)
    n_open = 0
    next_page = 0
    for s in range(len(samples)):
        while n_open < buffer_pages and next_page < len(page_order):
            page = page_order[next_page]
            next_page += 1
            if page_starts[page + 1] > page_starts[page]:
                open_pages[n_open] = page
                n_open += 1
        slot = min(int(picks[s] * n_open), n_open - 1)
        page = open_pages[slot]
        out[s] = samples[page_starts[page] + consumed[page]]
        consumed[page] += 1
        if page_starts[page] + consumed[page] == page_starts[page + 1]:
            n_open -= 1
            open_pages[slot] = open_pages[n_open]
    return out


def epoch_order(order: OrderOption, indices: np.ndarray, seed: int, epoch: int,
                pages: Optional[np.ndarray] = None, buffer_pages: int = 6) -> np.ndarray:
    """The order in which epoch ``epoch`` visits ``indices`` (int64), before sharding.

    ``pages[i]`` is the page holding sample ``indices[i]``, needed by QUASI_RANDOM, which
    shuffles pages and samples within pages and reads from ``buffer_pages`` pages at a time, so
    that a file larger than RAM is read a few pages at a time rather than at random."""
    indices = np.asarray(indices, dtype=np.int64)
    if order is OrderOption.SEQUENTIAL:
        return indices.copy()
    rng = np.random.default_rng((seed & 0xFFFFFFFF, seed >> 32 & 0xFFFFFFFF, epoch, OP_ORDER))
    if order is OrderOption.RANDOM or pages is None:
        return rng.permutation(indices)
    # Group by page (a stable sort keeps the group's samples in index order), then shuffle
    # each page's samples and the page order.
    by_page = np.argsort(pages, kind="stable")
    sorted_pages = pages[by_page]
    samples = indices[by_page]
    boundaries = np.flatnonzero(np.diff(sorted_pages)) + 1
    page_starts = np.concatenate([[0], boundaries, [len(samples)]]).astype(np.int64)
    keys = rng.random(len(samples))
    group = np.repeat(np.arange(len(page_starts) - 1), np.diff(page_starts))
    samples = samples[np.lexsort((keys, group))]
    page_order = rng.permutation(len(page_starts) - 1).astype(np.int64)
    return _interleave_pages(page_starts, samples, page_order, buffer_pages,
                             rng.random(len(samples)))


#: The ways a distributed epoch is split between ranks (``rank_split``; see the module docstring).
RANK_SPLITS = ("contiguous", "interleaved")


def shard_size(n: int, world_size: int, drop_last: bool, split: str = "contiguous") -> int:
    """How many of an epoch's ``n`` samples each rank gets."""
    if world_size <= 1:
        return n
    if drop_last and split == "contiguous":
        return n // world_size
    return -(-n // world_size)


def shard(order: np.ndarray, rank: int, world_size: int, drop_last: bool,
          split: str = "contiguous") -> np.ndarray:
    """Rank ``rank``'s share of an epoch order (see the module docstring)."""
    if world_size <= 1:
        return order
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    if split not in RANK_SPLITS:
        raise ValueError(f"rank split must be one of {RANK_SPLITS}, got {split!r}")
    n = len(order)
    per_rank = shard_size(n, world_size, drop_last, split)
    if per_rank * world_size > n:
        repeats = -(-(per_rank * world_size) // max(n, 1))
        order = np.tile(order, repeats)[:per_rank * world_size]
    if split == "interleaved":
        return order[rank::world_size]
    return order[rank * per_rank:(rank + 1) * per_rank]
