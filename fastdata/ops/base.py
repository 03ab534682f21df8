"""The two kinds of pipeline step, and what they see of a batch.

A field's pipeline is ``[decoder, *batch_ops]``:

- the **decoder** turns the stored values of a batch into one array slot of a fixed ring buffer.
  Image decoders do their per-sample work (decode, crop, resize, flip) in the loader's worker
  threads, in Numba kernels that hold no GIL; the others gather in one vectorised call.
- **batch ops** then run on the whole batch as torch tensors (to tensor, to device, layout,
  normalisation, mixing), in the loader's producer thread, ahead of the training loop.

Every random decision is drawn from the counter-based RNG keyed by (seed, epoch, sample index,
op) and kept in the batch's context as a typed record, where later ops read it: an image field's
``CropParams`` (the crop box a label map is pooled over, the flip bit that mirrors it), the mix
plans drawn before decoding, what Mixup drew.

What the Loader asks of a decoder (never its class): ``output_count`` (views), ``device``,
``parallel`` and ``task_ranges`` (by ``task_size``), ``allocate`` (its ring-slot buffers),
``reads`` (the fields whose crops it reads: it prepares after their decoders), ``absorb`` (ops
it folds in), ``paste_size`` (whether a CutMix may paste while it decodes) and
``params_record``.  The decoder a field gets
by default is the one registered for its type with ``register_default_decoder``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

if TYPE_CHECKING:
    from .crops import CropParams, PastePlan


@dataclass
class BatchContext:
    """What ops may read about the batch being built.

    indices: int64[B] sample indices (file record numbers); epoch and seed: the RNG key parts;
    batch: the batch's number within the epoch (keys per-batch draws such as a Mixup lambda);
    rank, world_size: this process's place in distributed training (1 process: 0, 1);
    slot: which ring-buffer slot the batch occupies (ops keep per-slot output buffers);
    names: the output names, in the order of the tuple that batch-level ops receive;
    view: while a field's pipeline ops run, the view of its decoder they are mapping (0 for
      single-view decoders and for batch-level ops);
    crops: image field name -> its ``CropParams`` (fastdata.ops.crops): boxes, flips, sizes,
      output sizes, the paste plan, per view;
    mix_plans: batch op -> the plan it drew in ``before_decode`` (e.g. Mixup's ``MixPlan``, with
      the ``PastePlan`` the image decoder follows), read back in its ``__call__``;
    mix: what Mixup drew for this batch (its ``MixRecord``), None without Mixup."""
    indices: np.ndarray
    epoch: int
    seed: int
    slot: int
    batch: int = 0
    rank: int = 0
    world_size: int = 1
    names: tuple = ()
    view: int = 0
    crops: dict[str, "CropParams"] = field(default_factory=dict)
    mix_plans: dict[Any, Any] = field(default_factory=dict)
    mix: Optional[Any] = None

    def paste_plan(self, image: str) -> Optional["PastePlan"]:
        """The PastePlan a batch op registered for image output ``image``, or None."""
        for plan in self.mix_plans.values():
            paste = getattr(plan, "paste", None)
            if paste is not None and plan.image == image:
                return paste
        return None


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
    #: Outputs per batch (several for a multi-view image decoder).
    output_count = 1
    #: Where the decoded batch lives.
    device = "cpu"

    def task_ranges(self, n: int) -> list[tuple[int, int]]:
        """How the parallel part of a batch of n samples is cut into worker tasks: (start, stop)
        ranges covering 0..n once; default ranges of ``task_size``."""
        step = max(1, int(self.task_size))
        return [(s, min(s + step, n)) for s in range(0, n, step)]

    @property
    def reads(self) -> tuple[str, ...]:
        """Names of the fields whose crops this decoder reads: the Loader prepares it after
        their decoders."""
        return ()

    def absorb(self, ops: list) -> list:
        """Take the pipeline's batch ops; return those left to run on the batch.  Subclasses
        call this first: it links each op to the step before it (``previous_step``), which
        FFCV-style operations (ops.ffcv_operation) read to learn their input's state."""
        previous: Any = self
        for op in ops:
            op.previous_step = previous
            previous = op
        return ops

    def paste_size(self) -> Optional[tuple[int, int]]:
        """(height, width) of an output a CutMix may paste into while decoding, else None."""
        return None

    def params_record(self, ctx: "BatchContext") -> list[np.ndarray]:
        """Records of the batch's random decisions for ``return_params`` (none here)."""
        return []

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

    def setup_backend(self, batch_size: int) -> None:
        """Called once bound, with the Loader's batch size, and again when output sizes change."""
        self.batch_size = batch_size

    def allocate(self, batch_size: int, ring_size: int, pin: bool) -> list:
        """Per ring slot, the output this decoder writes a batch into: an array of
        [batch_size, *sample_shape] (page-locked when ``pin``), or a list for documents."""
        shape, dtype = self.sample_shape(batch_size)
        if shape is None:
            return [[None] * batch_size for _ in range(ring_size)]
        array = host_array((ring_size, batch_size, *shape), dtype, pin)
        return [array[s] for s in range(ring_size)]

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

    #: The device this op moves batches to (ToDevice), None for the others.
    target_device: Optional[str] = None

    #: In FFCV's pipeline model (ops.ffcv_operation): whether the op leaves the batch in
    #: "JIT mode" (raw numpy arrays, as before FFCV's ToTensor): True for the ops that FFCV runs
    #: on raw arrays, False for those that make or need tensors, None to keep the mode of its
    #: input.
    ffcv_jit_mode: Optional[bool] = False
    #: The step before this op in its pipeline (the decoder or an op), set by Decoder.absorb.
    previous_step: Optional[Operation] = None

    def before_decode(self, ctx: BatchContext, images: dict[str, tuple[int, int]]) -> None:
        """Called for batch ops before the batch's decoders start: ``images`` maps the image
        outputs that only position-independent steps separate from this op to their (height,
        width); the op may draw its parameters now, into ``ctx.mix_plans[self]``, and a plan
        with ``paste`` (a PastePlan) and ``image`` attributes makes that image's decoder move
        pixels while decoding.  Default: nothing."""

    def __call__(self, batch: Any, ctx: BatchContext) -> Any:
        raise NotImplementedError


def host_array(shape: tuple, dtype: Any, pin: bool) -> np.ndarray:
    """An uninitialised host array; ``pin``: in page-locked memory (for copies to a GPU)."""
    if pin:
        import torch
        torch_dtype = torch.from_numpy(np.zeros(0, dtype)).dtype
        return torch.empty(shape, dtype=torch_dtype, pin_memory=True).numpy()
    return np.empty(shape, dtype=dtype)


def check_range(name: str, pair: tuple[float, float], low: float = 0.0) -> tuple[float, float]:
    lo, hi = float(pair[0]), float(pair[1])
    if not low <= lo <= hi:
        raise ValueError(f"{name} must be an increasing pair >= {low}, got {pair}")
    return lo, hi


# -- default decoders ----------------------------------------------------------------------------

#: Field class -> the decoder class a field of that class gets when its pipeline names none.
DEFAULT_DECODERS: dict[type, type] = {}
#: The modules whose decoders register themselves (imported on the first lookup).
DECODER_MODULES = ("decoders", "image_decoders", "relabel", "targets", "replay")


def register_default_decoder(cls: type) -> type:
    """Class decorator: ``cls`` becomes the default decoder of each of its ``field_types``."""
    for field_type in cls.field_types:
        DEFAULT_DECODERS[field_type] = cls
    return cls


def default_decoder(field: Any) -> Decoder:
    """A new default decoder for ``field`` (FFCV's for FFCV's types): the one registered for the
    nearest class in the field's class hierarchy."""
    for module in DECODER_MODULES:
        importlib.import_module(f"{__package__}.{module}")
    for cls in type(field).__mro__:
        if cls in DEFAULT_DECODERS:
            return DEFAULT_DECODERS[cls]()
    raise TypeError(f"no default decoder for {type(field).__name__}: give a pipeline")
