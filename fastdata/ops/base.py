"""The two kinds of pipeline step, and what they see of a batch.

A field's pipeline is ``[decoder, *batch_ops]``:

- the **decoder** turns the stored values of a batch into one array slot of a fixed ring buffer.
  Image decoders do their per-sample work (decode, crop, resize, flip) in the loader's worker
  threads, in Numba kernels that hold no GIL; the others gather in one vectorised call.
- **batch ops** then run on the whole batch as torch tensors (to tensor, to device, layout,
  normalisation, mixing), in the loader's producer thread, ahead of the training loop.

Every random decision is drawn from the counter-based RNG keyed by (seed, epoch, sample index,
op) and kept in the batch's ``params``, where later ops read it (the crop box a label map is pooled
over, the flip bit that mirrors it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class BatchContext:
    """What ops may read about the batch being built.

    indices: int64[B] sample indices (file record numbers); epoch and seed: the RNG key parts;
    batch: the batch's number within the epoch (keys per-batch draws such as a Mixup lambda);
    rank, world_size: this process's place in distributed training (1 process: 0, 1);
    slot: which ring-buffer slot the batch occupies (ops keep per-slot output buffers);
    names: the output names, in the order of the tuple that batch-level ops receive;
    params: per-field records of the random decisions drawn for this batch.  An image field's
      record is a dict of ``boxes`` int64[B, 4] (top, left, height, width in stored pixels),
      ``flips`` uint8[B], ``sizes`` and ``original_sizes`` int64[B, 2] (height, width stored,
      and before max_resolution), and ``output_size`` (height, width);
    plans: what batch ops drew in ``before_decode``, keyed by the op (read back in ``__call__``);
    pastes: image output name -> (paste_to int64[B], boxes int64[B, 4]): the image decoder
      writes output region boxes[k] (y0, y1, x0, x1) of sample k into sample paste_to[k]'s
      output instead of its own (-1: none).  Registered by ``before_decode`` (CutMix)."""
    indices: np.ndarray
    epoch: int
    seed: int
    slot: int
    batch: int = 0
    rank: int = 0
    world_size: int = 1
    names: tuple = ()
    params: dict[str, Any] = field(default_factory=dict)
    plans: dict[Any, Any] = field(default_factory=dict)
    pastes: dict[str, tuple] = field(default_factory=dict)


class Operation:
    """Base of all pipeline steps."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class Decoder(Operation):
    """First step of a field's pipeline: stored values -> a numpy batch in a ring slot."""

    #: True for decoders whose per-sample work runs in the worker threads (decode_range).
    parallel = False
    #: Samples per worker task: few for costly samples (balances the batch's tail across the
    #: workers), many for cheap ones (each task costs some microseconds of Python under the GIL).
    task_size = 4
    #: The field classes this decoder reads (checked by bind).
    field_types: tuple = ()

    def bind(self, reader, name: str, field_index: int) -> None:
        """Attach to field ``name`` of an open Reader; raise TypeError for a wrong field type."""
        field = reader.fields[name]
        if self.field_types and not isinstance(field, self.field_types):
            raise TypeError(f"{type(self).__name__} cannot decode field {name!r} of type "
                            f"{type(field).__name__} (it needs "
                            f"{' or '.join(t.__name__ for t in self.field_types)})")
        self.reader, self.name, self.field_index = reader, name, field_index
        self.column = reader.column(name)

    def unbind(self) -> None:
        """Drop every view of the reader's file that bind kept (the Loader is closing): while
        one lives, the file stays mapped.  Subclasses that keep more views drop them too."""
        self.column = None

    def sample_shape(self, batch_size: int) -> tuple[tuple[int, ...], Any]:
        """(per-sample shape, numpy dtype) of the decoded values; None shape for lists."""
        raise NotImplementedError

    def prepare(self, ctx: BatchContext, out: np.ndarray) -> None:
        """Per-batch work before the parallel part (draw parameters, gather metadata)."""

    def decode_range(self, ctx: BatchContext, start: int, stop: int, out: np.ndarray,
                     worker: Any) -> None:
        """Decode samples ctx.indices[start:stop] into out[start:stop] (worker threads)."""
        raise NotImplementedError

    def make_worker_state(self) -> Any:
        """Per-thread scratch (buffers, codec handles), made once per worker thread."""
        return None

    def release_worker_state(self, state: Any) -> None:
        """Free what make_worker_state made (the worker thread is ending)."""


class BatchOp(Operation):
    """A step on the whole batch (torch tensors), after the decoder."""

    #: True when the op maps each pixel on its own, wherever it is in the image (dtype, layout
    #: view, normalisation, device copy): moving pixels commutes with it, so a CutMix placed
    #: after it may paste while decoding (see ``before_decode``).
    position_independent = False

    def setup(self, ring_size: int) -> None:
        """Called once with the number of ring slots (to preallocate per-slot outputs).  Ops
        that keep per-slot buffers (Normalize, Mixup) serve one running Loader at a time: give
        two loaders that iterate at once their own op objects."""

    def before_decode(self, ctx: BatchContext, images: dict[str, tuple[int, int]]) -> None:
        """Called for batch ops before the batch's decoders start: ``images`` maps the image
        outputs that only position-independent steps separate from this op to their (height,
        width); the op may draw its parameters now (into ``ctx.plans``) and register pixel moves
        for the decoder (``ctx.pastes``).  Default: nothing."""

    def __call__(self, batch: Any, ctx: BatchContext) -> Any:
        raise NotImplementedError


def check_range(name: str, pair: tuple[float, float], low: float = 0.0) -> tuple[float, float]:
    lo, hi = float(pair[0]), float(pair[1])
    if not low <= lo <= hi:
        raise ValueError(f"{name} must be an increasing pair >= {low}, got {pair}")
    return lo, hi

