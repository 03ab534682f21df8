"""Where the writer's samples are loaded and encoded: worker threads, worker processes, or the
calling thread; results come back in sample order.

Threads suit code this project owns: its image fields release the GIL while decoding, resizing
and encoding, and threads share memory, so nothing is copied between processes.  A user's
dataset runs in worker processes instead, as in FFCV: its ``__getitem__`` may rely on state that
is global to a process, most often numpy's global RNG (``np.random.seed(i); np.random.randn(n)``,
as FFCV's own test datasets do).  Threads of one process share that state and race on it, so
some records would silently differ from ``dataset[i]``; in a process of its own each call sees
exactly the state a lone call would.

Worker processes start with ``fork`` where it is available (Linux: the dataset is inherited, not
copied) and ``spawn`` elsewhere (the dataset and fields are pickled once per worker; a dataset
that cannot be pickled is refused up front with a clear error).  They ignore SIGINT, so Ctrl-C
interrupts only the writing process, which stops them.

A field written for FFCV (``encode(destination, field, malloc)``) is not encoded here: its
value travels as :class:`Deferred` to the calling thread, which runs that ``encode`` in sample
order with FFCV's ``malloc`` (see fastdata.writer).
"""
from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections import deque
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

from .fields import Field

#: What a bad sample raises: it fails alone (``on_error`` applies).  Anything else stops the
#: write (a bug in the dataset, not a bad sample).
SAMPLE_ERRORS = (ValueError, TypeError, OSError, MemoryError)

WORKER_TYPES = ("thread", "process")


class WorkerDied(RuntimeError):
    """A worker process ended without returning its task (killed, or crashed in native code)."""


@dataclass
class Deferred:
    """The value of an FFCV-style field, encoded later by the calling thread."""
    value: Any


@dataclass
class Failed:
    """A sample that could not be loaded or encoded (a SAMPLE_ERRORS error): why."""
    reason: str


@dataclass
class Crashed:
    """Loading or encoding a sample raised something other than SAMPLE_ERRORS: the write stops.

    ``error`` is the exception itself where it was raised in this process (threads), else None
    and ``remote_traceback`` holds the worker process's traceback as text."""
    message: str
    error: Optional[BaseException] = None
    remote_traceback: str = ""


def encode_sample(sample: Any, fields: Sequence[Optional[Field]], names: Sequence[str],
                  index: int) -> list:
    """Encode one sample (a tuple in field order) of source index ``index``: an Encoded per
    fastdata field, a Deferred per FFCV-style one (``None`` in ``fields``).  Raises
    SAMPLE_ERRORS naming the field for a bad value."""
    if not isinstance(sample, (tuple, list)) or len(sample) != len(fields):
        raise TypeError(f"expected a tuple of {len(fields)} values ({', '.join(names)}), got "
                        f"{type(sample).__name__}"
                        + (f" of {len(sample)}" if isinstance(sample, (tuple, list)) else ""))
    encoded: list = []
    for name, fld, value in zip(names, fields, sample):
        if fld is None:
            encoded.append(Deferred(value))
            continue
        try:
            encoded.append(fld.encode(value, index))
        except SAMPLE_ERRORS as err:
            raise type(err)(f"field {name!r}: {err}") from None
    return encoded


def _outcome(load: Callable[[], Any], fields: Sequence[Optional[Field]], names: Sequence[str],
             index: int, in_process: bool) -> Any:
    """encode_sample(load()) or what went wrong, as a Failed or Crashed value."""
    try:
        return encode_sample(load(), fields, names, index)
    except SAMPLE_ERRORS as err:
        return Failed(str(err) or type(err).__name__)
    except Exception as err:     # noqa: BLE001 - reported with the sample index, write stops
        message = f"{type(err).__name__}: {err}"
        if in_process:
            return Crashed(message, None, traceback.format_exc())
        return Crashed(message, err)


def encode_positions(load: Callable[[int], Any], source_index: Callable[[int], int],
                     fields: Sequence[Optional[Field]], names: Sequence[str],
                     positions: Iterable[int]) -> list[tuple[int, Any]]:
    """(k, outcome) for each position k: a thread task (``load(k)`` runs in the thread)."""
    return [(k, _outcome(lambda: load(k), fields, names, source_index(k), False))
            for k in positions]


# -- worker processes ----------------------------------------------------------------------------
_STATE: dict = {}


def _end_with_parent(parent_pid: int) -> None:
    """End this worker when the writing process ends, however it ends (even by SIGKILL):
    Linux's parent-death signal where available, else a thread that watches the parent."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        if libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0) == 0:
            if os.getppid() != parent_pid:      # it died before the signal was set
                os._exit(1)
            return
    except Exception:    # noqa: BLE001 - no prctl here (not Linux): watch instead
        pass

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="fastdata-parent-watch", daemon=True).start()


def _init_process(source: Any, fields: Sequence[Optional[Field]], names: Sequence[str],
                  parent_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _end_with_parent(parent_pid)
    _STATE.update(source=source, fields=list(fields), names=list(names))


def _process_items(pairs: Sequence[tuple[int, int]]) -> list[tuple[int, Any]]:
    """(k, outcome) for each (k, source index i): ``dataset[i]`` loaded in this process."""
    dataset = _STATE["source"]
    return [(k, _outcome(lambda: dataset[i], _STATE["fields"], _STATE["names"], i, True))
            for k, i in pairs]


def _shard_samples(shard: str, pipeline: Callable) -> Iterator:
    from webdataset import WebDataset     # optional dependency, as in FFCV
    return iter(pipeline(WebDataset(shard)))


def count_samples(shard: str, pipeline: Callable) -> int:
    """How many samples ``pipeline`` gives for one shard (by iterating them, as FFCV does:
    the pipeline need not have a length)."""
    return sum(1 for _ in _shard_samples(shard, pipeline))


def _count_shard(shard: str) -> int:
    return count_samples(shard, _STATE["source"])


def shard_results(shard: str, offset: int, pipeline: Callable,
                  fields: Sequence[Optional[Field]], names: Sequence[str],
                  in_process: bool) -> list[tuple[int, Any]]:
    """(k, outcome) for each sample of one webdataset shard; k counts on from ``offset``."""
    results = []
    samples = _shard_samples(shard, pipeline)
    k = offset
    while True:
        try:
            sample = next(samples)
        except StopIteration:
            return results
        except Exception as err:    # noqa: BLE001 - the pipeline failed: the write stops
            results.append((k, Crashed(f"shard {shard}: {type(err).__name__}: {err}",
                                       None if in_process else err,
                                       traceback.format_exc() if in_process else "")))
            return results
        results.append((k, _outcome(lambda: sample, fields, names, k, in_process)))
        k += 1


def _process_shard(shard: str, offset: int) -> list[tuple[int, Any]]:
    return shard_results(shard, offset, _STATE["source"], _STATE["fields"], _STATE["names"],
                         True)


def default_start_method() -> str:
    """``fork`` where the platform offers it safely (Linux and other POSIX but macOS, whose
    system libraries may crash in a forked child), else ``spawn``."""
    methods = multiprocessing.get_all_start_methods()
    return "fork" if "fork" in methods and sys.platform != "darwin" else "spawn"


def process_pool(num_workers: int, source: Any, fields: Sequence[Optional[Field]],
                 names: Sequence[str], start_method: Optional[str] = None,
                 what: str = "dataset") -> ProcessPoolExecutor:
    """A pool of ``num_workers`` processes holding ``source`` (the dataset, or a webdataset
    pipeline) and the fields they encode.  ValueError where ``spawn`` must pickle ``source`` or
    a field and cannot."""
    method = start_method or default_start_method()
    if method not in multiprocessing.get_all_start_methods():
        raise ValueError(f"start method {method!r} is not available here "
                         f"({', '.join(multiprocessing.get_all_start_methods())})")
    if method != "fork":
        for name, obj in [(f"the {what} ({type(source).__name__})", source)] + \
                [(f"field {n!r} ({type(f).__name__})", f) for n, f in zip(names, fields)]:
            try:
                pickle.dumps(obj)
            except Exception as err:    # noqa: BLE001 - any pickling failure means the same
                raise ValueError(
                    f"{name} cannot be sent to {method!r} worker processes: pickling it "
                    f"failed ({type(err).__name__}: {err}).  Define it at module level with "
                    f"picklable attributes, or write with num_workers=0 (no workers), or "
                    f"worker_type='thread' if it is thread-safe") from None
    return ProcessPoolExecutor(num_workers, mp_context=multiprocessing.get_context(method),
                               initializer=_init_process, initargs=(source, fields, names, os.getpid()))


def stop_pool(pool: Executor) -> None:
    """Stop a pool at once: pending tasks cancelled, worker processes terminated (their work
    only ever reaches memory, so nothing is lost that the write would keep)."""
    pool.shutdown(wait=False, cancel_futures=True)
    if isinstance(pool, ProcessPoolExecutor):
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            if process.is_alive():
                process.terminate()
        pool.shutdown(wait=True)


def ordered_results(pool: Executor, tasks: Iterable[tuple[Callable, tuple]], window: int,
                    what: Callable[[int], str]) -> Iterator[tuple[int, Any]]:
    """Run ``fn(*args)`` for each task on ``pool``, at most ``window`` at once, and yield the
    (k, outcome) pairs of each task's result list in task order.  ``what(t)`` names task t
    in the error raised if a worker process dies."""
    pending: deque = deque()
    tasks = iter(tasks)
    done = 0
    exhausted = False
    while True:
        while not exhausted and len(pending) < window:
            task = next(tasks, None)
            if task is None:
                exhausted = True
                break
            pending.append(pool.submit(task[0], *task[1]))
        if not pending:
            return
        future = pending.popleft()
        try:
            results = future.result()
        except BrokenProcessPool:
            raise WorkerDied(f"a writer worker process died (killed, or crashed in native "
                               f"code) while working on {what(done)}") from None
        done += 1
        yield from results


__all__ = ["Deferred", "Failed", "Crashed", "SAMPLE_ERRORS", "WORKER_TYPES", "encode_sample",
           "WorkerDied", "encode_positions", "count_samples", "shard_results", "process_pool", "stop_pool", "ordered_results",
           "default_start_method"]
