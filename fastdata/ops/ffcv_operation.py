"""FFCV's extension point: ``Operation``, ``State``, ``AllocationQuery`` and ``Compiler``, so that
a custom op written for FFCV 1.0.2 runs in a fastdata pipeline with only its imports changed.

An FFCV-style op subclasses ``Operation`` and implements

- ``declare_state_and_memory(previous_state) -> (State, Optional[AllocationQuery])``: what the
  batch looks like after the op (JIT mode, device, per-sample shape, dtype) and the output
  buffer it wants (per-sample shape, dtype, device; None: none);
- ``generate_code() -> f``: the function run on each batch, called ``f(batch, dst)``, or
  ``f(batch, dst, indices)`` when ``f.with_indices`` is set (indices: int64[B] sample indices),
  plus the shared memory when the op declares some (``declare_shared_memory`` /
  ``generate_code_for_shared_state``).  It returns the batch the next step gets.

As in FFCV: ``dst`` is the op's buffer for the batch's ring slot, ``[B, *shape]`` (cut to the
batch's length), allocated once per ring slot, not per batch: a numpy array for a numpy dtype, a
torch tensor (on ``device``) for a torch dtype.  In JIT mode (the state the op declares has
``jit_mode=True``) the batch arrives as a numpy array and ``f`` is compiled with Numba
(``Compiler.compile``: nopython, fastmath, nogil) unless ``Compiler.set_enabled(False)``;
otherwise it gets the torch tensor.  ``Compiler.get_iterator()`` gives ``range`` (fastdata runs a
batch's ops in one thread; ``Compiler.set_num_threads(n > 1)`` gives numba's ``prange``).

The state an op is handed follows FFCV: the decoder's output is in JIT mode, on the CPU, with the
decoded shape and numpy dtype; fastdata's own ops keep or change the mode as FFCV's ops of the
same name do (``BatchOp.ffcv_jit_mode``: ToTensor ends JIT mode, RandomHorizontalFlip and Cutout
are JIT ops, ...).  Shape, dtype and device are read from the batch itself, so an op is declared
again (and its buffers made again) when they change, e.g. when progressive resizing changes the
image size.

What differs: ``generate_code`` and ``declare_state_and_memory`` run at the first batch (FFCV
calls them when the Loader is made); ``accept_field`` / ``accept_globals`` are not called (they
feed FFCV decoders, which read raw storage: fastdata's decoders are ``fastdata.ops.Decoder``);
an FFCV-style op runs in the loader's producer thread, after the batch's decoding.  Anything
fastdata cannot run raises a ValueError that says so; ``fastdata.ops.BatchOp`` is the native
way to write an op (``__call__(batch, ctx)``, with the sample indices, epoch, seed and crop
records in ``ctx``).
"""
from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .base import BatchContext, BatchOp, Decoder

NATIVE_HINT = ("write it as a fastdata.ops.BatchOp (__call__(batch, ctx): the batch and its "
               "context, with ctx.indices, ctx.slot, ctx.seed and ctx.epoch) instead")


@dataclass
class State:
    """FFCV's pipeline state: ``jit_mode`` (raw numpy arrays, Numba-compiled code), ``device``,
    per-sample ``shape`` and ``dtype`` (numpy dtype in JIT mode, torch or numpy after)."""
    jit_mode: bool
    device: torch.device
    shape: Tuple[int, ...]
    dtype: Any

    def __post_init__(self):
        if self.jit_mode and torch.device(self.device) != torch.device("cpu"):
            raise AssertionError("Can't be in JIT mode and on the GPU")
        if self.jit_mode and isinstance(self.dtype, torch.dtype):
            raise AssertionError("Can't allocate a torch tensor in JIT mode")


@dataclass(frozen=True)
class AllocationQuery:
    """FFCV's request for an output buffer: per-sample ``shape``, ``dtype`` (numpy: a numpy
    array; torch: a tensor on ``device``)."""
    shape: Tuple[int, ...]
    dtype: Any
    device: Optional[torch.device] = None


Allocation = Union[AllocationQuery, Sequence[AllocationQuery]]


class Compiler:
    """FFCV's Compiler: ``compile(code)`` Numba-compiles a JIT-mode function (nopython, fastmath,
    nogil, numpy's error model; parallel when ``code.is_parallel`` and more than one thread),
    or returns it unchanged when disabled; ``get_iterator()`` is ``range``, or numba's
    ``prange`` after ``set_num_threads(n)`` with n > 1."""

    is_enabled: bool = True
    num_threads: int = 1

    @classmethod
    def set_enabled(cls, b: bool) -> None:
        cls.is_enabled = bool(b)

    @classmethod
    def set_num_threads(cls, n: int) -> None:
        """Numba threads for ``prange`` loops (n < 1: every core); torch's are left alone."""
        import os
        import numba
        if n < 1:
            n = os.cpu_count() or 1
        cls.num_threads = int(n)
        numba.set_num_threads(min(cls.num_threads, numba.config.NUMBA_NUM_THREADS))

    @classmethod
    def compile(cls, code: Callable, signature: Any = None) -> Callable:
        if not cls.is_enabled:
            return code
        from numba import njit
        parallel = bool(getattr(code, "is_parallel", False)) and cls.num_threads > 1
        return njit(signature, fastmath=True, nogil=True, error_model="numpy",
                    parallel=parallel)(code)

    @classmethod
    def get_iterator(cls) -> Callable:
        if cls.num_threads > 1:
            from numba import prange
            return prange
        return range


def allocate_query(query: AllocationQuery, batch_size: int, ring_size: int) -> list:
    """Per ring slot, a ``[batch_size, *query.shape]`` buffer: numpy for a numpy dtype, a torch
    tensor on ``query.device`` for a torch dtype (FFCV's allocate_query, one entry per slot)."""
    shape = (batch_size, *tuple(query.shape))
    if isinstance(query.dtype, torch.dtype):
        device = torch.device(query.device) if query.device is not None else torch.device("cpu")
        return [torch.empty(shape, dtype=query.dtype, device=device) for _ in range(ring_size)]
    block = np.empty((ring_size, *shape), dtype=np.dtype(query.dtype))
    return [block[s] for s in range(ring_size)]


def _allocate(allocation: Optional[Allocation], batch_size: int, ring_size: int) -> list:
    """Per slot: None, one buffer, or a tuple of buffers (a sequence of queries)."""
    if allocation is None:
        return [None] * ring_size
    if isinstance(allocation, AllocationQuery):
        return allocate_query(allocation, batch_size, ring_size)
    if isinstance(allocation, Sequence):
        per_query = [allocate_query(q, batch_size, ring_size) for q in allocation]
        return [tuple(buffers[s] for buffers in per_query) for s in range(ring_size)]
    raise ValueError(f"declare_state_and_memory must return an AllocationQuery, a sequence of "
                     f"them or None as memory, got {type(allocation).__name__}")


def _cut(buffer: Any, count: int) -> Any:
    if buffer is None:
        return None
    if isinstance(buffer, tuple):
        return tuple(_cut(b, count) for b in buffer)
    return buffer[:count]


def jit_mode_after(step: Any) -> bool:
    """Whether the batch is in FFCV's JIT mode after ``step`` (a decoder, an op, or None for the
    start of a pipeline whose decoder did not link its ops)."""
    seen = set()
    while step is not None and id(step) not in seen:
        seen.add(id(step))
        if isinstance(step, Operation):
            if step._state is not None:
                return step._state[1].jit_mode
        elif isinstance(step, Decoder):
            return True
        else:
            mode = getattr(step, "ffcv_jit_mode", False)
            if mode is not None:
                return bool(mode)
        step = getattr(step, "previous_step", None)
    return True


def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    return torch.empty(0, dtype=dtype).numpy().dtype


class Operation(BatchOp):
    """FFCV's ``ffcv.pipeline.operation.Operation`` as a fastdata batch op (see the module's
    docstring).  Subclasses implement ``generate_code`` and ``declare_state_and_memory``."""

    # Class-level defaults, so that a subclass whose __init__ skips super().__init__() works.
    metadata: Optional[np.ndarray] = None
    memory_read: Optional[Callable] = None
    _ring_size = 0
    _state: Optional[tuple] = None
    _code: Optional[Callable] = None
    _shared_code: Optional[Callable] = None
    _memory: list = []
    _shared_memory: list = []
    _capacity = 0
    _with_indices = False

    def __init__(self):
        self.metadata: Optional[np.ndarray] = None
        self.memory_read: Optional[Callable] = None
        self._ring_size = 0
        self._state: Optional[tuple] = None    # (previous State, next State)
        self._code: Optional[Callable] = None
        self._shared_code: Optional[Callable] = None
        self._memory: list = []
        self._shared_memory: list = []
        self._capacity = 0

    # FFCV's interface ---------------------------------------------------------------------------
    def accept_field(self, field: Any) -> None:
        self.field = field

    def accept_globals(self, metadata: Any, memory_read: Callable) -> None:
        self.metadata = metadata
        self.memory_read = memory_read

    @abstractmethod
    def generate_code(self) -> Callable:
        raise NotImplementedError

    def declare_shared_memory(self, previous_state: State) -> Optional[AllocationQuery]:
        return None

    def generate_code_for_shared_state(self) -> Optional[Callable]:
        return None

    @abstractmethod
    def declare_state_and_memory(self, previous_state: State
                                 ) -> Tuple[State, Optional[AllocationQuery]]:
        raise NotImplementedError

    # fastdata's BatchOp ---------------------------------------------------------------------------
    @property
    def ffcv_jit_mode(self) -> Optional[bool]:      # read by jit_mode_after for later steps
        return None if self._state is None else self._state[1].jit_mode

    def setup(self, ring_size: int) -> None:
        self._ring_size = int(ring_size)
        self._state = None        # declared again at the next batch

    def recompile(self) -> None:
        """Declare the state and generate the code again at the next batch (Loader's
        ``recompile=True`` calls this at each iter(), as FFCV regenerates its code per epoch)."""
        self._state = None

    def previous_state(self, batch: Any) -> State:
        """The State FFCV would hand this op for ``batch``."""
        jit = jit_mode_after(getattr(self, "previous_step", None))
        if isinstance(batch, torch.Tensor):
            device = batch.device
            dtype = _numpy_dtype(batch.dtype) if jit else batch.dtype
        elif isinstance(batch, np.ndarray):
            device, dtype = torch.device("cpu"), batch.dtype
        else:
            raise ValueError(f"{type(self).__name__}: an FFCV-style operation needs an array "
                             f"batch, got {type(batch).__name__}; {NATIVE_HINT}")
        if jit and device.type != "cpu":
            raise ValueError(f"{type(self).__name__}: FFCV's JIT mode needs the batch on the CPU, "
                             f"but it is on {device} (is the op after ToDevice?)")
        return State(jit_mode=jit, device=device, shape=tuple(batch.shape[1:]), dtype=dtype)

    def _declare(self, batch: Any) -> None:
        """Declare the state for this batch's layout, generate and compile the code, and make
        the per-slot buffers (again only when shape, dtype, device or mode change)."""
        previous = self.previous_state(batch)
        if self._state is not None and self._state[0] == previous and \
                len(batch) <= self._capacity:
            return
        declared = self.declare_state_and_memory(previous)
        if not (isinstance(declared, tuple) and len(declared) == 2 and
                isinstance(declared[0], State)):
            raise ValueError(f"{type(self).__name__}.declare_state_and_memory must return "
                             f"(State, AllocationQuery or None), got {declared!r}")
        state, allocation = declared
        ring = self._ring_size or 1          # 0: called outside a Loader
        capacity = max(len(batch), self._capacity)
        self._memory = _allocate(allocation, capacity, ring)
        shared = self.declare_shared_memory(previous)
        self._shared_memory = _allocate(shared, capacity, ring)
        code = self.generate_code()
        if not callable(code):
            raise ValueError(f"{type(self).__name__}.generate_code must return a function, got "
                             f"{type(code).__name__}")
        shared_code = self.generate_code_for_shared_state()
        if state.jit_mode:
            code = Compiler.compile(code)
            if shared_code is not None:
                shared_code = Compiler.compile(shared_code)
        self._with_indices = bool(getattr(self.generate_code_attrs(code), "with_indices", False))
        self._code, self._shared_code = code, shared_code
        self._capacity = capacity
        self._state = (previous, state)

    @staticmethod
    def generate_code_attrs(code: Callable) -> Callable:
        """The Python function behind a compiled one (its attributes: with_indices, ...)."""
        return getattr(code, "py_func", code)

    def __call__(self, batch: Any, ctx: BatchContext) -> Any:
        self._declare(batch)
        previous, state = self._state
        n = len(batch)
        slot = ctx.slot % len(self._memory)
        arg = batch
        if state.jit_mode and isinstance(batch, torch.Tensor):
            arg = batch.numpy()          # the same memory: in-place ops change the batch
        args = [arg, _cut(self._memory[slot], n)]
        if self._with_indices:
            args.append(np.ascontiguousarray(ctx.indices, dtype=np.int64))
        if self._shared_code is not None:
            shared = _cut(self._shared_memory[slot], n)
            self._shared_code(shared)
            args.append(shared)
        try:
            result = self._code(*args)
        except Exception as err:
            raise ValueError(f"{type(self).__name__} (an FFCV-style operation, "
                             f"{'JIT' if state.jit_mode else 'tensor'} mode, input state "
                             f"{previous}) failed on batch {ctx.batch}: {type(err).__name__}: "
                             f"{err}.  If this op needs something fastdata's FFCV layer does not "
                             f"give, {NATIVE_HINT}") from err
        if isinstance(result, np.ndarray) and isinstance(batch, torch.Tensor):
            result = torch.from_numpy(result)
        return result
