"""The Loader: what a training script iterates.

One epoch is run by an EpochIterator, which owns a producer thread and ``num_workers`` worker
threads for exactly as long as the epoch (or until it is closed, broken out of, or garbage
collected: no thread outlives it).  The producer takes batch after batch of the epoch's order,
lets each field's decoder prepare it, hands the per-sample image work to the workers in small
chunks (Numba kernels that hold no GIL), runs the batch ops, and queues the finished batch.

Batches live in a ring of ``batches_ahead + 3`` slots allocated once per Loader: one decoding,
one finishing its batch ops (which overlap the next batch's decoding), up to ``batches_ahead``
queued, one held by the training loop.  Tensors a batch returns on the CPU share the slot's
memory: they stay valid until the training loop takes the next batch (as in FFCV); ``.clone()``
what you keep longer.

A sample that fails to decode raises SampleError in the training loop (``on_error="raise"``), or
is replaced by another sample drawn from the counter-based RNG (``on_error="skip"``): the whole
batch is then built again with the replacement's index in the bad sample's place, so every field
of that position comes from the replacement, and the batch is what the epoch would give had its
order held the replacement there.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import weakref
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Optional, Sequence, Union

import numpy as np
import torch

from .fields import RGBImageField
from .ops.base import BatchContext, BatchOp, Decoder, default_decoder
from .ops.tensor import ModuleWrapper, ToTensor
from .order import RANK_SPLITS, OrderOption, as_order, epoch_order, shard, shard_size
from .reader import Reader, SampleError
from .rng import OP_SKIP, draw
from .workers import resolve_workers

logger = logging.getLogger("fastdata")

#: With on_error="skip", how many replacements a bad sample may get (each failing too) before
#: the Loader gives up and raises: a file where so many draws fail is broken, not noisy.
MAX_REPLACEMENTS = 16


class SkippedSample(NamedTuple):
    """A sample that failed to decode and what replaced it (on_error="skip")."""
    index: int          # the sample that failed
    field: str          # the field whose decoding failed
    reason: str         # why (SampleError.reason)
    replacement: int    # the sample that took its place in the batch
    epoch: int
    batch: int          # the batch's number within the epoch
    position: int       # the row of the batch it was in


@dataclass
class _Pipeline:
    name: str
    decoder: Decoder
    ops: list[BatchOp]


class _Slots:
    """The ring: for each pipeline, ring_size preallocated decoder output batches."""

    def __init__(self, pipelines: list[_Pipeline], batch_size: int, ring_size: int, pin: bool):
        # buffers[k][slot]: pipeline k's output in that slot (a tuple of arrays for a decoder
        # with several views, a list for JSON documents), allocated by its decoder.
        self.buffers: list[list[Any]] = [p.decoder.allocate(batch_size, ring_size, pin)
                                         for p in pipelines]


def _with_to_tensor(ops: list) -> list:
    """A pipeline's batch ops with ToTensor before the first op that needs torch input: an op
    whose ``ffcv_jit_mode`` is False (True: it works on raw numpy batches, as FFCV's
    pre-ToTensor transforms do; None: on either).  A pipeline with no such op and no ToTensor
    yields numpy arrays, as in FFCV."""
    for k, op in enumerate(ops):
        if isinstance(op, ToTensor):
            return ops
        if getattr(op, "ffcv_jit_mode", False) is False:
            return ops[:k] + [ToTensor()] + ops[k:]
    return ops


class Loader:
    """Batches of torch tensors from a .beton file (ours or FFCV's), FFCV's interface.

    The first thirteen parameters are FFCV's, in FFCV's order; the rest are keyword-only.

    fname: the .beton file; a list of files or a glob pattern reads a shard set as one
      dataset (see fastdata.shards).  batch_size: samples per batch (per rank when distributed).
    num_workers: decoding threads (-1: every core this process may use; 0: no threads at all,
      as torch's DataLoader with num_workers=0: each batch is decoded and its batch ops run in
      the thread that calls ``next()``, when it calls it).
    os_cache: True memory-maps the file (the OS page cache holds it); False reads it into
      process memory once.
    order: 'sequential', 'random' or 'quasi_random' (or OrderOption / FFCV's OrderOption).
    distributed: shard each epoch by torch.distributed's rank and world size (``rank_split``).
    seed: keys every random decision (orders and augmentations) with the epoch and sample.
      None draws one from numpy's global RNG, as FFCV does (a new order each run; 0 with
      distributed=True and a shuffled order, so that ranks agree); ``loader.seed`` holds it.
    indices: the subset of sample indices to use (default: all).
    pipelines: field name -> [decoder, *batch ops]; fields left out get FFCV's default
      pipeline (decoder + ToTensor); None drops a field.  Outputs come one per field in the
      file's field order (as in FFCV), whatever order ``pipelines`` lists them in.  A pipeline
      without ToTensor yields numpy arrays, as in FFCV, unless an op in it needs torch input
      (ToTensor is then put before that op).
    custom_fields: field name -> Field class, for fields stored with a custom type.
    drop_last: drop a last partial batch.  batches_ahead: batches prepared ahead.
    recompile: FFCV's; calls ``recompile()`` on ops that have it (code-generating FFCV-style
      Operations) at each iter().  fastdata's own ops read their parameters at every batch, so
      a changed parameter (e.g. output_size) takes effect at the next iter() either way.
    batch_ops: ops on the whole output tuple after the per-field pipelines (e.g. CutMix).
    rank_split: how distributed=True splits an epoch: "contiguous" blocks (default) or
      "interleaved" (torch's DistributedSampler, always padded, as FFCV); see order.py.
    return_params: also yield, per image pipeline, the float64 [B, 9] record of its random
      decisions (crop top, left, height, width in stored pixels, the same in original-image
      pixels, flip bit).
    on_error: what a sample that fails to decode does.  "raise" (default): SampleError, with
      ``.index`` and ``.field``, reaches the training loop and the epoch's threads stop.
      "skip": the sample is replaced by sample ``indices[floor(u * len(indices))]``, u drawn
      from the counter-based RNG keyed (seed, epoch, bad index, OP_SKIP), draw t for the t-th
      try if replacements fail too (at most MAX_REPLACEMENTS); all its fields come from the
      replacement, batches stay full, and the batches are the same whatever ``num_workers`` and
      ``batches_ahead`` are, and after a resume.  Each skip is logged (warning, logger
      "fastdata") and appended to ``loader.skipped`` (SkippedSample records) when its batch
      reaches the training loop.  Each bad sample costs at most one more decoding of its
      batch.  A failure that names a sample outside the batch (a mixing partner ReplayedCrop
      decodes) still raises.

    path may also be an fsspec URL (``s3://bucket/train.beton``, ``gs://``, ``https://``,
    ``file://``): pages are fetched ahead of the order into a local page cache (fastdata/remote.py;
    README "Remote files").  cache_dir: a directory keeping fetched pages as files (shareable by
    the processes of a node); None keeps them in memory.  cache_size: limit of that cache in
    bytes (None: no limit).  storage_options: passed to fsspec (e.g. ``{"endpoint_url": ...}``).
    remote_settings: a fastdata.remote.RemoteSettings (timeouts, retries, look-ahead).  These
    four apply to URLs only.  A page that cannot be fetched raises fastdata.remote.
    RemotePageError (URL, page, byte range) in the training loop, the epoch's threads stopped.

    close() (or leaving a ``with Loader(...)`` block) stops the running epoch and releases the
    file (unmapped and closed); a closed Loader raises ValueError if iterated.  An epoch
    stopped by close(), iter() or load_state_dict() from another thread ends: a thread waiting
    in its next() gets StopIteration.
    """

    def __init__(self, fname: Union[str, os.PathLike, Sequence[str]], batch_size: int,
                 num_workers: int = -1, os_cache: bool = True,
                 order: Any = OrderOption.SEQUENTIAL, distributed: bool = False,
                 seed: Optional[int] = 0,
                 indices: Optional[Sequence[int]] = None,
                 pipelines: Optional[Mapping[str, Optional[Sequence[Any]]]] = None,
                 custom_fields: Optional[Mapping[str, type]] = None, drop_last: bool = True,
                 batches_ahead: int = 3, recompile: bool = False, *,
                 batch_ops: Optional[Sequence[Any]] = None, return_params: bool = False,
                 on_error: str = "raise", rank_split: str = "contiguous",
                 cache_dir: Optional[Union[str, os.PathLike]] = None,
                 cache_size: Optional[int] = None,
                 storage_options: Optional[Mapping[str, Any]] = None,
                 remote_settings: Optional[Any] = None):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if batches_ahead < 1:
            raise ValueError(f"batches_ahead must be >= 1, got {batches_ahead}")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if rank_split not in RANK_SPLITS:
            raise ValueError(f"rank_split must be one of {RANK_SPLITS}, got {rank_split!r}")
        # What the caller passed, for filter() (FFCV's: the same loader over fewer indices).
        self._args = dict(fname=fname, batch_size=batch_size, num_workers=num_workers,
                          os_cache=os_cache, order=order, distributed=distributed, seed=seed,
                          indices=indices, pipelines=pipelines, custom_fields=custom_fields,
                          drop_last=drop_last, batches_ahead=batches_ahead, recompile=recompile,
                          batch_ops=batch_ops, return_params=return_params, on_error=on_error,
                          rank_split=rank_split, cache_dir=cache_dir, cache_size=cache_size,
                          storage_options=storage_options, remote_settings=remote_settings)
        path = fname
        num_workers = resolve_workers(num_workers)
        self.reader = Reader(path, custom_fields, storage_options=storage_options,
                             cache_dir=cache_dir, cache_size=cache_size,
                             remote_settings=remote_settings)
        if not os_cache:
            self.reader.load_into_memory()
        self.path = self.reader.path
        self.batch_size = int(batch_size)
        self.num_workers = num_workers
        self.order = as_order(order)
        #: True when seed=None drew this run's seed (FFCV's meaning): load_state_dict then
        #: adopts the saved one, so a resumed run still replays its batches.
        self.seed_drawn = seed is None
        if seed is None and distributed and self.order is not OrderOption.SEQUENTIAL:
            # Every rank must shuffle alike; FFCV does the same (with a printed warning).
            logger.warning("%s: seed=None with distributed=True: using seed 0 so that every "
                           "rank draws the same order", fname)
            seed, self.seed_drawn = 0, False
        elif seed is None:
            seed = int(np.random.randint(0, np.iinfo(np.int32).max))   # as FFCV draws it
        self.seed = int(seed)
        self.recompile = bool(recompile)
        self.rank_split = rank_split
        self.drop_last = drop_last
        self.batches_ahead = int(batches_ahead)
        self.return_params = return_params
        self.on_error = on_error
        self.skipped: list[SkippedSample] = []   # every skip of the batches taken, in order
        self.batch_ops = list(batch_ops or [])

        n = len(self.reader)
        self.indices = np.arange(n, dtype=np.int64) if indices is None else \
            np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= n):
            raise IndexError(f"indices must be in [0, {n})")
        self.rank, self.world_size = 0, 1
        if distributed:
            if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
                raise RuntimeError("distributed=True needs torch.distributed to be initialised")
            self.rank = torch.distributed.get_rank()
            self.world_size = torch.distributed.get_world_size()
        self._pages = self._page_of_samples()[self.indices]
        if self.reader.remote is not None:
            self._prepare_remote()

        self.pipelines = self._build_pipelines(pipelines or {})
        # Output names in tuple order (a multi-view pipeline gives name, name_1, name_2, ...).
        self.pipeline_names = tuple(
            p.name if v == 0 else f"{p.name}_{v}" for p in self.pipelines
            for v in range(p.decoder.output_count))
        self._check_batch_op_inputs()
        self._prepare_order = self._order_by_reads()
        # batches_ahead queued + one held by the training loop + one finishing its batch ops +
        # one decoding: the batch ops of one batch overlap the decoding of the next.
        self.ring_size = self.batches_ahead + 3
        for p in self.pipelines:
            for op in p.ops:
                op.setup(self.ring_size)
        for op in self.batch_ops:
            if hasattr(op, "setup"):
                op.setup(self.ring_size)
        self._pre_decode = self._pre_decode_ops()
        self._needs_cuda = any(getattr(op, "target_device", None) == "cuda"
                               for p in self.pipelines for op in p.ops)
        self._slots: Optional[_Slots] = None
        # The output layout the backends were bound for (and the ring, once made, sized for).
        self._bound_layout = self._output_layout()
        self._next_epoch = 0      # what a plain iter() starts, like FFCV: one epoch per iter()
        self._resume: Optional[tuple[int, int]] = None   # (epoch, batch) from load_state_dict
        self._epoch: Optional[int] = None   # epoch being iterated, None before the first
        self._batch = 0           # batches of it already taken by the training loop
        self._active: Optional[weakref.ref] = None
        self._closed = False

    # -- construction --------------------------------------------------------------------------
    def _page_of_samples(self) -> np.ndarray:
        """Page of each sample's first payload, for quasi-random order (0 without payloads)."""
        for name in self.reader.field_names:
            ptrs = self.reader.payload_ptrs(name)
            if ptrs is not None:
                return (ptrs // np.uint64(self.reader.page_size)).astype(np.int64)
        return np.zeros(len(self.reader), dtype=np.int64)

    def _prepare_remote(self) -> None:
        """A remote file: warn about order='random'; fetch the pages holding non-image payloads
        before the decoders are bound (some, e.g. top-k targets, check every record then)."""
        remote = self.reader.remote
        if self.order is OrderOption.RANDOM:
            remote.warn_random_order(self.batch_size)
        for name, field in self.reader.fields.items():
            ptrs = self.reader.payload_ptrs(name)
            if ptrs is not None and not isinstance(field, RGBImageField):
                sizes = self.reader.payload_sizes(name)
                remote.fetch_pages(remote.pages_of_samples_field(ptrs, sizes), None)

    def _build_pipelines(self, spec: Mapping[str, Optional[Sequence[Any]]]) -> list[_Pipeline]:
        unknown = set(spec) - set(self.reader.fields)
        if unknown:
            raise ValueError(f"pipelines name fields not in {self.path}: {sorted(unknown)} "
                             f"(fields: {self.reader.field_names})")
        pipelines = []
        for name in self.reader.field_names:     # FFCV's order: one output per field, as stored
            steps = spec.get(name, "default")
            if steps is None:
                continue
            field_index = self.reader.field_names.index(name)
            if steps == "default":
                steps = [default_decoder(self.reader.fields[name]), ToTensor()]
            steps = list(steps)
            if not steps or not isinstance(steps[0], Decoder):
                steps.insert(0, default_decoder(self.reader.fields[name]))
            decoder, ops = steps[0], steps[1:]
            # A torch module in a pipeline is applied to the batch tensor, as FFCV does (its
            # randomness, if any, is its own: torch's global RNG, not fastdata's).
            ops = [ModuleWrapper(op) if isinstance(op, torch.nn.Module) else op for op in ops]
            for op in ops:
                if not isinstance(op, BatchOp):
                    raise TypeError(f"pipeline {name!r}: {op!r} is not a batch op; only its first "
                                    f"step may be a decoder")
            ops = _with_to_tensor(list(decoder.absorb(ops)))
            decoder.bind(self.reader, name, field_index)
            decoder.setup_backend(self.batch_size)
            pipelines.append(_Pipeline(name, decoder, ops))
        if not pipelines:
            raise ValueError("every field's pipeline is None: nothing to load")
        return pipelines

    def _check_batch_op_inputs(self) -> None:
        """Batch ops take torch tensors: a pipeline that yields numpy arrays (no ToTensor, as
        FFCV allows) cannot feed them."""
        numpy_outputs = [p.name for p in self.pipelines
                         if not any(isinstance(op, ToTensor) for op in p.ops)]
        if self.batch_ops and numpy_outputs:
            raise ValueError(f"batch_ops take torch tensors, but the pipelines of "
                             f"{numpy_outputs} yield numpy arrays: add ToTensor() to them")

    def _order_by_reads(self) -> list[int]:
        """Pipeline positions in the order their decoders prepare a batch: each after the
        decoders of the fields it ``reads`` (their crops), otherwise in pipeline order."""
        position = {p.name: k for k, p in enumerate(self.pipelines)}
        order: list[int] = []
        state: dict[int, str] = {}

        def visit(k: int) -> None:
            if state.get(k) == "done":
                return
            if state.get(k) == "visiting":
                raise ValueError(f"pipelines read each other's crops in a cycle through "
                                 f"{self.pipelines[k].name!r}")
            state[k] = "visiting"
            for name in self.pipelines[k].decoder.reads:
                if name in position:      # a field left out is reported by the decoder
                    visit(position[name])
            state[k] = "done"
            order.append(k)
        for k in range(len(self.pipelines)):
            visit(k)
        return order

    def _pre_decode_ops(self) -> list[tuple[Any, dict[str, tuple[int, int]]]]:
        """(batch op, image outputs it may paste into while decoding) for each batch op that
        plans before decoding.  An output qualifies when a single-view image decoder that can
        paste makes it and only position-independent steps (its pipeline's ops, the batch ops
        before this one) come between: moving pixels then commutes with all of them."""
        images = {p.name: p.decoder.paste_size() for p in self.pipelines
                  if p.decoder.paste_size() is not None
                  and all(getattr(op, "position_independent", False) for op in p.ops)}
        plan = []
        for op in self.batch_ops:
            plans = getattr(type(op), "before_decode", BatchOp.before_decode)
            if images and plans is not BatchOp.before_decode:
                plan.append((op, dict(images)))
            if not getattr(op, "position_independent", False):
                images = {}
        return plan

    # -- orders and length ---------------------------------------------------------------------
    def epoch_indices(self, epoch: int) -> np.ndarray:
        """The sample indices this rank visits in ``epoch``, in order."""
        order = epoch_order(self.order, self.indices, self.seed, epoch, self._pages)
        return shard(order, self.rank, self.world_size, self.drop_last, self.rank_split)

    def _num_samples_per_rank(self) -> int:
        return shard_size(len(self.indices), self.world_size, self.drop_last, self.rank_split)

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        n = self._num_samples_per_rank()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    # -- iteration and resume ------------------------------------------------------------------
    def __iter__(self) -> "EpochIterator":
        if self._closed:
            raise ValueError(f"{self.path}: this Loader is closed (make a new one to read the "
                             f"file again)")
        self._stop_active()       # the ring is shared: one live epoch at a time
        if self._resume is not None:
            (epoch, batch), self._resume = self._resume, None
        else:
            epoch, batch = self._next_epoch, 0
        self._next_epoch = epoch + 1
        self._epoch, self._batch = epoch, batch
        if self.recompile:
            # FFCV regenerates its pipeline code each epoch; ours is static, so only ops that
            # generate code (FFCV-style Operations) have anything to redo.
            for op in self._all_ops():
                if hasattr(op, "recompile"):
                    op.recompile()
        layout = self._output_layout()
        if layout != self._bound_layout:
            # An op's output size changed since the backends were bound (FFCV's progressive
            # resizing sets decoder.output_size between epochs, or before the first): rebind
            # the backends and redo the paste plan and the ring for the new shapes.
            for p in self.pipelines:
                p.decoder.setup_backend(self.batch_size)
            self._pre_decode = self._pre_decode_ops()
            self._bound_layout = layout
            self._slots = None        # the old ring goes before the new one is allocated
        if self._slots is None:
            pin = self._needs_cuda and torch.cuda.is_available()
            self._slots = _Slots(self.pipelines, self.batch_size, self.ring_size, pin)
        iterator = EpochIterator(self, epoch, batch)
        self._active = weakref.ref(iterator)
        return iterator

    def _all_ops(self) -> list:
        return [op for p in self.pipelines for op in p.ops] + list(self.batch_ops)

    def _output_layout(self) -> list:
        """Each decoder's per-sample output (shape, dtype) now: what the ring was sized for."""
        return [p.decoder.sample_shape(self.batch_size) for p in self.pipelines]

    def _stop_active(self) -> None:
        previous = self._active() if self._active else None
        if previous is not None:
            previous.close()

    @property
    def next_epoch(self) -> int:
        """The epoch the next plain iter() runs (FFCV's attribute; settable, as in FFCV)."""
        return self._resume[0] if self._resume is not None else self._next_epoch

    @next_epoch.setter
    def next_epoch(self, epoch: int) -> None:
        self._resume = None
        self._next_epoch = int(epoch)

    def filter(self, field_name: str, condition: Callable[[Any], bool]) -> "Loader":
        """FFCV's ``Loader.filter``: a new Loader, with this one's arguments, over only the
        samples whose ``field_name`` output (this loader's pipeline for it, one sample at a time,
        e.g. a [1] array for an IntField) makes ``condition`` true.  Unlike FFCV, which takes
        the positions of the passing samples as sample indices, it keeps the passing samples'
        own indices, so it is right when ``indices`` was given too."""
        if field_name not in self.reader.fields:
            raise ValueError(f"filter: no field {field_name!r} in {self.path} "
                             f"(fields: {self.reader.field_names})")
        args = dict(self._args)
        spec = dict(args["pipelines"] or {})
        probe_pipelines = {name: None for name in self.reader.field_names}
        if spec.get(field_name, "default") is not None:
            probe_pipelines.pop(field_name)
            if field_name in spec:
                probe_pipelines[field_name] = spec[field_name]
        remote = {k: args[k] for k in ("cache_dir", "cache_size", "storage_options",
                                       "remote_settings")}
        probe = Loader(args["fname"], self.batch_size, args["num_workers"],
                       order=OrderOption.SEQUENTIAL, seed=self.seed, indices=self.indices,
                       pipelines=probe_pipelines, custom_fields=args["custom_fields"],
                       drop_last=False, batches_ahead=self.batches_ahead, **remote)
        kept = []
        with probe:
            position = 0
            for (values,) in probe:
                for value in values:
                    if condition(value):
                        kept.append(int(self.indices[position]))
                    position += 1
        args["indices"] = np.asarray(kept, dtype=np.int64)
        args["seed"] = self.seed
        return type(self)(**args)

    @property
    def epoch(self) -> int:
        """The epoch being iterated, or the next one before the first iteration."""
        return self._next_epoch if self._epoch is None else self._epoch

    def state_dict(self) -> dict:
        """Where the training loop stands: enough to resume bit for bit with load_state_dict.

        (epoch, batch) is the next batch a resumed loader yields."""
        if self._resume is not None:
            epoch, batch = self._resume
        elif self._epoch is None:
            epoch, batch = self._next_epoch, 0
        elif self._batch >= len(self):
            epoch, batch = self._epoch + 1, 0
        else:
            epoch, batch = self._epoch, self._batch
        return {"epoch": epoch, "batch": batch, "seed": self.seed, "order": self.order.value,
                "num_samples": len(self.indices), "batch_size": self.batch_size,
                "world_size": self.world_size, "rank": self.rank, "rank_split": self.rank_split}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Make the next iteration continue at ``state``'s epoch and batch.  A loader whose
        seed was drawn (seed=None) takes the saved seed; a given seed must match it."""
        if self.seed_drawn and "seed" in state:
            self.seed = int(state["seed"])
        mine = self.state_dict()
        for key in ("seed", "order", "num_samples", "batch_size", "world_size", "rank_split"):
            if key in state and state[key] != mine[key]:
                raise ValueError(f"state was saved with {key}={state[key]!r}, this loader has "
                                 f"{mine[key]!r}: resuming would not replay the same batches")
        if not 0 <= int(state["batch"]) <= len(self):
            raise ValueError(f"state batch {state['batch']} is outside [0, {len(self)}]")
        self._stop_active()
        self._resume = (int(state["epoch"]), int(state["batch"]))

    def close(self) -> None:
        """Stop the running epoch, if any, and release the file (unmapped and closed) and the
        ring (its memory goes once the tensors of batches taken are dropped too).  Idempotent;
        iterating a closed Loader raises ValueError."""
        self._closed = True
        self._stop_active()
        for p in self.pipelines:      # their views of the map would keep the file mapped
            p.decoder.unbind()
        self.reader.close()
        self._slots = None

    def _record_skips(self, skips: list[SkippedSample]) -> None:
        """Log and keep the skips of a batch the training loop takes."""
        for skip in skips:
            logger.warning("%s: sample %d, field %r: %s; replaced by sample %d (epoch %d, "
                           "batch %d, position %d)", self.path, skip.index, skip.field,
                           skip.reason, skip.replacement, skip.epoch, skip.batch, skip.position)
        self.skipped.extend(skips)

    def __enter__(self) -> "Loader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


_DONE = object()


class _WorkerPool:
    """Threads that run decoders' per-sample work; each keeps its own scratch state.  With no
    threads (num_workers=0) a task runs in the thread that queues it, when it is queued."""

    def __init__(self, count: int, pipelines: list[_Pipeline]):
        self.pipelines = pipelines
        self.inline_states: dict[int, Any] = {}
        self.tasks: Any = queue.SimpleQueue() if count else _RunAtOnce(self)
        self.threads = [threading.Thread(target=self._run, name=f"fastdata-worker-{i}",
                                         daemon=True) for i in range(count)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        states: dict[int, Any] = {}
        while True:
            task = self.tasks.get()
            if task is _DONE:
                self._release(states)
                return
            self.run_task(task, states)

    def run_task(self, task: tuple, states: dict[int, Any]) -> None:
        job, k, ctx, start, stop, out = task
        decoder = self.pipelines[k].decoder
        try:
            if k not in states:
                states[k] = decoder.make_worker_state()
            decoder.decode_range(ctx, start, stop, out, states[k])
        except SampleError as err:
            job.fail(err)
        except Exception as err:   # a decoder bug or a bad sample: report, keep the thread
            job.fail(SampleError(int(ctx.indices[start]), decoder.name,
                                 f"{type(err).__name__}: {err}"))
        finally:
            job.done_one()

    def _release(self, states: dict[int, Any]) -> None:
        for k, state in states.items():
            self.pipelines[k].decoder.release_worker_state(state)

    def close(self) -> None:
        for _ in self.threads:
            self.tasks.put(_DONE)
        for t in self.threads:
            t.join()
        self._release(self.inline_states)
        self.inline_states = {}


class _RunAtOnce:
    """The task queue of a pool without threads: ``put`` runs the task in the caller."""

    def __init__(self, pool: _WorkerPool):
        self.pool = pool

    def put(self, task: tuple) -> None:
        self.pool.run_task(task, self.pool.inline_states)


class _Job:
    """Completion count of one batch's tasks, and their errors."""

    def __init__(self, count: int):
        self.remaining = count
        self.errors: list[BaseException] = []
        self.cond = threading.Condition()

    def done_one(self) -> None:
        with self.cond:
            self.remaining -= 1
            if self.remaining == 0:
                self.cond.notify_all()

    def fail(self, error: BaseException) -> None:
        with self.cond:
            self.errors.append(error)

    def wait(self) -> None:
        """Wait for every task; then raise the first error, if any (all are in ``errors``)."""
        with self.cond:
            while self.remaining:
                self.cond.wait()
        if self.errors:
            raise self.errors[0]


@dataclass
class _Started:
    """A batch whose decoding is under way."""
    number: int
    ctx: BatchContext
    outs: list
    job: _Job
    replacements: Optional["_Replacements"]


class _Replacements:
    """The bad samples of one batch and what replaces them (on_error="skip").

    Position k's candidates are the epoch order's index, then replacement 0, 1, ...: its final
    sample is the first candidate that decodes, whatever order the failures are found in (the
    workers report one per task, the serial decoders one per call), so the batch depends only
    on which samples are bad."""

    def __init__(self, loader: Loader, epoch: int, indices: np.ndarray):
        self.loader, self.epoch = loader, epoch
        self.original = indices
        self.indices = indices.copy()
        self.tries = np.zeros(len(indices), dtype=np.int64)
        self.failures: list[tuple[int, SampleError]] = []    # (position, its error)

    def replace(self, errors: list[SampleError]) -> np.ndarray:
        """Give every position holding a failed sample its next candidate: the new indices."""
        by_index: dict[int, list[SampleError]] = {}
        for err in errors:
            by_index.setdefault(int(err.index), []).append(err)
        for index, errs in by_index.items():
            positions = np.flatnonzero(self.indices == index)
            if positions.size == 0:
                raise errs[0]     # not a sample of this batch: replacing would not remove it
            for k in positions:
                self.failures += [(int(k), err) for err in errs]
                if self.tries[k] == MAX_REPLACEMENTS:
                    err = errs[0]
                    raise SampleError(err.index, err.field, f"{err.reason} (on_error='skip' gave "
                                      f"up: sample {int(self.original[k])} and "
                                      f"{MAX_REPLACEMENTS} replacements all failed)")
                self.indices[k] = self.candidate(int(self.original[k]), int(self.tries[k]))
                self.tries[k] += 1
        return self.indices.copy()

    def candidate(self, index: int, attempt: int) -> int:
        """Replacement number ``attempt`` of sample ``index`` in this epoch: uniform over the
        Loader's indices, keyed (seed, epoch, index, OP_SKIP), draw ``attempt``."""
        pool = self.loader.indices
        u = draw(self.loader.seed, self.epoch, index, OP_SKIP, attempt)
        return int(pool[min(int(u * len(pool)), len(pool) - 1)])

    def records(self, batch_number: int) -> list[SkippedSample]:
        """One SkippedSample per failure, by position then field (not by discovery order)."""
        return [SkippedSample(int(err.index), err.field, err.reason, int(self.indices[k]),
                              self.epoch, batch_number, k)
                for k, err in sorted(self.failures, key=lambda f: (f[0], f[1].field,
                                                                  f[1].index))]


class _Producer:
    """The state the producer thread shares with its EpochIterator (never the iterator itself,
    so that dropping the iterator stops the thread).  With num_workers=0 there is no thread:
    ``get`` makes each batch in the calling thread."""

    def __init__(self, loader: Loader, epoch: int, batches: list[np.ndarray], first_batch: int):
        self.loader, self.epoch, self.batches, self.first_batch = loader, epoch, batches, first_batch
        self.out: queue.Queue = queue.Queue(maxsize=loader.batches_ahead)
        self.stop = threading.Event()
        self.pool = _WorkerPool(loader.num_workers, loader.pipelines)
        self.stream = torch.cuda.Stream() if loader._needs_cuda and torch.cuda.is_available() \
            else None
        self.events: dict[int, Any] = {}   # slot -> CUDA event: its last batch's copy is done
        self.page_feed = None    # a remote file: fetches the pages of the next batches ahead
        if loader.reader.remote is not None:
            from .remote import PageFeed
            self.page_feed = PageFeed(loader.reader.remote, batches, first_batch, self.stop)
        self.thread: Optional[threading.Thread] = None
        if loader.num_workers == 0:
            self.serial_lock = threading.RLock()    # close() from another thread waits for get()
            self.serial_items = self._serial_items()
        else:
            self.thread = threading.Thread(target=self._run, name="fastdata-producer",
                                           daemon=True)
            self.thread.start()

    def _put(self, item: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def get(self) -> Any:
        """The next queued item, or _DONE once the producer is stopped: close() from any thread
        wakes a consumer waiting here (nothing will be queued any more)."""
        if self.thread is None:
            with self.serial_lock:
                return _DONE if self.stop.is_set() else next(self.serial_items, _DONE)
        while not self.stop.is_set():
            try:
                return self.out.get(timeout=0.1)
            except queue.Empty:
                continue
        return _DONE

    def _run(self) -> None:
        try:
            pending = None
            for b, indices in enumerate(self.batches):
                if self.stop.is_set():
                    return
                # Start decoding batch b, then finish batch b - 1 (its batch ops run in this
                # thread) while the workers decode: batch ops never leave the workers idle.
                started = self._start_batch(self.first_batch + b, indices)
                if pending is not None and not self._put(self._finish_batch(pending)):
                    return
                pending = started
            if pending is not None and not self._put(self._finish_batch(pending)):
                return
            self._put(_DONE)
        except BaseException as err:
            self._put(err)
        finally:
            self.pool.close()
            if self.page_feed is not None:
                self.page_feed.close()

    def _serial_items(self) -> Iterator[tuple]:
        """num_workers=0: each batch, decoded and finished when ``get`` asks for it."""
        for b, indices in enumerate(self.batches):
            yield self._finish_batch(self._start_batch(self.first_batch + b, indices))

    def _start_batch(self, batch_number: int, indices: np.ndarray,
                     replacements: Optional[_Replacements] = None) -> _Started:
        """Draw the batch's parameters, run the decoders' serial part, queue the parallel part
        (with on_error="skip", again with replacements while the serial part fails)."""
        while True:
            try:
                return self._try_start_batch(batch_number, indices, replacements)
            except SampleError as err:
                if self.loader.on_error == "raise":
                    raise
                if replacements is None:
                    replacements = _Replacements(self.loader, self.epoch, indices)
                indices = replacements.replace([err])

    def _try_start_batch(self, batch_number: int, indices: np.ndarray,
                         replacements: Optional[_Replacements]) -> _Started:
        loader = self.loader
        if self.page_feed is not None:      # every page the batch's samples touch is present
            self.page_feed.ensure(batch_number, indices)
        slot = batch_number % loader.ring_size
        ctx = BatchContext(indices=indices, epoch=self.epoch, seed=loader.seed, slot=slot,
                           batch=batch_number, rank=loader.rank, world_size=loader.world_size,
                           names=loader.pipeline_names)
        if self.stream is not None:
            # The slot's previous batch may still be copying to the device.
            event = self.events.get(slot)
            if event is not None:
                event.synchronize()
        outs = [loader._slots.buffers[k][slot] for k in range(len(loader.pipelines))]
        n = len(indices)
        for op, images in loader._pre_decode:    # e.g. CutMix: drawn now, pasted while decoding
            op.before_decode(ctx, images)
        tasks = []
        # Decoders that read another field's crops prepare after that field's decoder.
        for k in loader._prepare_order:
            p = loader.pipelines[k]
            p.decoder.prepare(ctx, outs[k])
            if p.decoder.parallel:
                tasks += [(k, s, e) for s, e in p.decoder.task_ranges(n)]
        job = _Job(len(tasks))
        for k, start, stop in tasks:
            self.pool.tasks.put((job, k, ctx, start, stop, outs[k]))
        return _Started(batch_number, ctx, outs, job, replacements)

    def _finish_batch(self, started: _Started) -> tuple:
        """Wait for the workers, then run the batch ops: the finished batch for the queue,
        (number, outputs, CUDA event or None, skips).  With on_error="skip", a batch with bad
        samples is started again with replacements until it decodes."""
        while True:
            try:
                started.job.wait()
                results, ready = self._batch_ops(started.ctx, started.outs)
                break
            except SampleError as err:
                if self.loader.on_error == "raise":
                    raise
                replacements = started.replacements or _Replacements(
                    self.loader, self.epoch, started.ctx.indices)
                indices = replacements.replace(started.job.errors or [err])
                started = self._start_batch(started.number, indices, replacements)
        skips = [] if started.replacements is None else \
            started.replacements.records(started.number)
        return started.number, results, ready, skips

    def _batch_ops(self, ctx: BatchContext, outs: list) -> tuple:
        """Run the pipelines' and the loader's batch ops on a decoded slot."""
        loader = self.loader
        n = len(ctx.indices)
        results = []
        with (torch.cuda.stream(self.stream) if self.stream is not None else _null()):
            for k, p in enumerate(loader.pipelines):
                values = outs[k] if isinstance(outs[k], tuple) else (outs[k],)
                for v, value in enumerate(values):          # one per view
                    view_ctx = replace(ctx, view=v) if v else ctx
                    value = value[:n]
                    for op in p.ops:
                        value = op(value, view_ctx)
                    results.append(value)
            for op in loader.batch_ops:
                results = list(op(tuple(results), ctx))
            if loader.return_params:
                for p in loader.pipelines:
                    results += [torch.from_numpy(r) for r in p.decoder.params_record(ctx)]
            ready = None
            if self.stream is not None:
                ready = torch.cuda.Event()
                ready.record(self.stream)
                self.events[ctx.slot] = ready
        return tuple(results), ready

    def close(self) -> None:
        self.stop.set()
        try:
            while True:
                self.out.get_nowait()
        except queue.Empty:
            pass
        if self.thread is not None:
            self.thread.join()
            return
        with self.serial_lock:
            self.serial_items.close()
            self.pool.close()
            if self.page_feed is not None:
                self.page_feed.close()


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


class EpochIterator:
    """One pass over an epoch's batches.  Closing it (or dropping it) stops its threads."""

    def __init__(self, loader: Loader, epoch: int, first_batch: int):
        self.loader = loader
        order = loader.epoch_indices(epoch)
        size = loader.batch_size
        stop = len(loader) * size
        batches = [order[s:min(s + size, stop if loader.drop_last else len(order))]
                   for s in range(first_batch * size, len(order) if not loader.drop_last
                                  else stop, size)]
        self._producer: Optional[_Producer] = _Producer(loader, epoch, batches, first_batch)
        self._finalizer = weakref.finalize(self, _Producer.close, self._producer)

    def __iter__(self) -> "EpochIterator":
        return self

    def __next__(self) -> tuple:
        producer = self._producer
        if producer is None:
            raise StopIteration
        try:
            item = producer.get()
        except BaseException:
            self.close()
            raise
        if item is _DONE:
            self.close()
            raise StopIteration
        if isinstance(item, BaseException):
            self.close()
            raise item
        batch_number, results, ready, skips = item
        if skips:
            self.loader._record_skips(skips)
        if ready is not None:
            stream = torch.cuda.current_stream()
            stream.wait_event(ready)
            for t in results:
                if isinstance(t, torch.Tensor) and t.is_cuda:
                    t.record_stream(stream)
        self.loader._batch = batch_number + 1
        return results

    def close(self) -> None:
        """Stop the producer and worker threads now (idempotent)."""
        if self._producer is not None:
            self._finalizer()
            self._producer = None
