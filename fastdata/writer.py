"""Writing a ``.beton`` file: encode samples in parallel, lay them into pages, finalize atomically.

Workers load and encode samples (see fastdata.write_workers): threads for the project's own
writers (JPEG decoding, resizing and encoding release the GIL, so threads scale across cores with
no copies between processes), worker processes for a user's dataset (whose ``__getitem__`` may
use process-global state such as numpy's RNG, which threads would race on).  The calling thread places the
encoded samples into pages in sample order, so the file's layout does not depend on the number of
workers, and every sample's regions lie inside one page (as in FFCV, whose quasi-random order and
process cache rely on it).

The file is written under a temporary name beside the output and renamed over it only when it is
complete: an interrupted, killed or failed write never leaves a file at the output path that looks
complete, and an older file there is kept intact until the new one replaces it.  The temporary name
carries the writer's host and pid, so that a later write can tell (and remove) the temporary files
of writers that were killed outright from those of writers still running.
"""
from __future__ import annotations

import os
import queue
import re
import secrets
import signal
import socket
import threading
import time
import bisect
import importlib.util
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass, field as dataclass_field
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import numpy as np

from . import format as fmt
from .constants import DEFAULT_PAGE_SIZE
from .fields import CUSTOM_TYPE_ID, Field
from .fields.base import is_ffcv_style
from .workers import resolve_workers
from .write_workers import (SAMPLE_ERRORS, WORKER_TYPES, Crashed, Deferred, Failed, WorkerDied,
                            encode_positions, ordered_results, process_pool, stop_pool)
from .write_workers import _count_shard, _process_items, _process_shard, count_samples, shard_results


class WriteError(RuntimeError):
    """The write stopped; nothing was left at the output path."""


class WriteTerminated(SystemExit):
    """SIGTERM arrived during a write; the temporary file was removed.

    A SystemExit with status 143 (128 + SIGTERM): left uncaught, the process ends with the status
    a shell reports for a process that SIGTERM ended, as it would have without the write."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


@dataclass
class SampleFailure:
    """A source sample that could not be written: its index, a description (path) and why."""
    index: int
    source: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}"


@dataclass
class WriteReport:
    """What a write did.  ``seconds`` is wall time; rates are per second of it."""
    path: str
    num_written: int
    num_failed: int
    seconds: float
    file_size: int
    failures: list[SampleFailure] = dataclass_field(default_factory=list)
    error_log: Optional[str] = None

    @property
    def samples_per_second(self) -> float:
        return self.num_written / self.seconds if self.seconds > 0 else float("inf")


def _pwrite_all(fd: int, offset: int, data) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


class _PageSink:
    """Writes finished pages from a thread of its own, so packing never waits on the disk."""

    def __init__(self, fd: int, depth: int = 4):
        self.fd = fd
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, name="fastdata-page-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            if self.error is None:
                try:
                    _pwrite_all(self.fd, *item)
                except BaseException as err:   # disk full, I/O error: re-raised by the packer
                    self.error = err

    def write(self, offset: int, data) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put((offset, data))

    def close(self) -> None:
        """Wait for every queued page (once); re-raise a write error."""
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()
        if self.error is not None:
            raise self.error


class _PagePacker:
    """Places encoded samples into full pages, handed in order to a _PageSink."""

    def __init__(self, sink: _PageSink, data_start: int, page_size: int):
        self.sink, self.page_size = sink, page_size
        self.page = bytearray(0)
        self.next_page = data_start // page_size   # absolute number of the next page to start
        self.page_no = -1          # absolute number of the page in self.page; -1: none yet
        self.offset = page_size    # no room left: the first place() starts a page
        self.alloc: list[tuple[int, int, int]] = []

    def _flush(self) -> None:
        if self.offset:
            self.sink.write(self.page_no * self.page_size, self.page)

    def _new_page(self) -> None:
        if self.page_no >= 0:
            self._flush()
        self.page_no, self.next_page = self.next_page, self.next_page + 1
        self.page = bytearray(self.page_size)   # zeroed by calloc; the sink owns the old one
        self.offset = 0

    def place(self, sample_id: int, payloads: Sequence[Any]) -> list[int]:
        """Copy one sample's payloads into one page; returns their absolute pointers."""
        # A zero-size value still takes one byte so that every pointer is unique (FFCV looks
        # regions up by pointer); the allocation table records its true size, 0.
        sizes = [0 if p is None else p.nbytes if isinstance(p, np.ndarray) else len(p)
                 for p in payloads]
        needed = sum(max(s, 1) for p, s in zip(payloads, sizes) if p is not None)
        if needed > self.page_size:
            raise ValueError(f"encoded sample is {needed} bytes, larger than the page size "
                             f"{self.page_size}: lower max_resolution or raise page_size")
        if needed > self.page_size - self.offset:
            self._new_page()
        ptrs = []
        for payload, size in zip(payloads, sizes):
            if payload is None:
                ptrs.append(0)
                continue
            ptr = self.page_no * self.page_size + self.offset
            if isinstance(payload, np.ndarray):
                payload = memoryview(np.ascontiguousarray(payload)).cast("B")
            self.page[self.offset:self.offset + size] = payload
            self.alloc.append((sample_id, ptr, size))
            ptrs.append(ptr)
            self.offset += max(size, 1)
        return ptrs

    def place_with_malloc(self, sample_id: int, sample_index: int, payloads: Sequence[Any],
                          calls: Sequence[tuple[Field, Any]]) -> tuple[list[int], list[Any]]:
        """Place one sample that has FFCV-style fields: its fastdata payloads (as ``place``)
        and, for each (field, value) of ``calls``, run ``field.encode(destination, value,
        malloc)`` with FFCV's malloc.  Returns the payloads' pointers and each call's metadata
        record.  As in FFCV's writer, a sample that runs past the end of the page is undone and
        encoded again from a fresh page, so that it lies in one page."""
        for fresh in (False, True):
            if fresh:
                self._new_page()
            start_page, start_offset, start_alloc = self.page_no, self.offset, len(self.alloc)
            malloc = _PageMalloc(self, sample_id, sample_index)
            try:
                ptrs = []
                for payload in payloads:
                    if payload is None:
                        ptrs.append(0)
                        continue
                    raw = np.frombuffer(np.ascontiguousarray(payload) if isinstance(
                        payload, np.ndarray) else payload, dtype=np.uint8)
                    ptr, buffer = malloc(raw.size)
                    buffer[:] = raw
                    ptrs.append(ptr)
                records = []
                for fld, value in calls:
                    destination = np.zeros(1, dtype=fld.metadata_dtype)
                    fld.encode(destination, value, malloc)
                    records.append(destination[0])
                return ptrs, records
            except BaseException as err:
                if self.page_no == start_page and self.offset > start_offset:
                    self.page[start_offset:self.offset] = bytes(self.offset - start_offset)
                    self.offset = start_offset
                del self.alloc[start_alloc:]
                if not isinstance(err, _PageFull):
                    raise
                if fresh or (start_page >= 0 and start_offset == 0):
                    raise ValueError(f"encoded sample does not fit in one page of "
                                     f"{self.page_size} bytes: lower max_resolution or raise "
                                     f"page_size") from None
        raise AssertionError("unreachable")

    def place_table(self, blob: bytes) -> int:
        """Store a side table in the current page if it fits, else on fresh pages of its own
        (it may span several: a region read through the memory map may cross pages); its
        pointer."""
        if 0 < len(blob) <= self.page_size - self.offset:
            return self.place(int(fmt.NO_SAMPLE_ID), [blob])[0]
        if self.page_no >= 0:
            self._flush()
        ptr = self.next_page * self.page_size
        pages = max(1, -(-len(blob) // self.page_size))
        padded = bytearray(pages * self.page_size)
        padded[:len(blob)] = blob
        self.sink.write(ptr, padded)
        self.alloc.append((int(fmt.NO_SAMPLE_ID), ptr, len(blob)))
        self.page_no, self.next_page = self.next_page + pages - 1, self.next_page + pages
        self.offset = 0      # nothing left to flush: the table's pages went out whole
        return ptr

    def finish(self) -> int:
        """Hand over the last page; returns the end of the data pages (0 if none were written)."""
        if self.page_no < 0:
            return 0
        self._flush()
        return self.next_page * self.page_size


class _PageFull(Exception):
    """FFCV's malloc ran past the end of the page: the sample starts again on a fresh one."""


class _PageMalloc:
    """FFCV's ``malloc(size) -> (pointer, writable uint8 buffer of size bytes)`` for one sample,
    in the packer's current page.  ``sample_index`` (the source index) is what fastdata's own
    fields, called in FFCV's way, seed per-sample draws with."""

    def __init__(self, packer: _PagePacker, sample_id: int, sample_index: int):
        self.packer, self.sample_id, self.sample_index = packer, sample_id, sample_index

    def __call__(self, size: int) -> tuple[int, np.ndarray]:
        packer = self.packer
        size = int(size)
        if size < 0:
            raise ValueError(f"malloc of a negative size ({size})")
        if size > packer.page_size:
            raise ValueError(f"tried to allocate {size} bytes but the page size is "
                             f"{packer.page_size}")
        reserved = max(size, 1)    # every pointer unique, as the packer's own values
        if reserved > packer.page_size - packer.offset:
            raise _PageFull()
        ptr = packer.page_no * packer.page_size + packer.offset
        buffer = np.frombuffer(packer.page, dtype=np.uint8, count=size, offset=packer.offset) \
            if size else np.zeros(0, dtype=np.uint8)
        packer.alloc.append((self.sample_id, ptr, size))
        packer.offset += reserved
        return ptr, buffer


class DatasetWriter:
    """Writes samples into a ``.beton`` file; FFCV's ``DatasetWriter`` with the same arguments.

    fname: the output path.
    fields: an ordered mapping of field name to Field; each sample is a tuple in that order.
    page_size: bytes per data page (a power of two, 2 MiB to 2 GiB; default 8 MiB as FFCV).
    num_workers: workers that load and encode samples (-1: every core; 0: none, the calling
      thread loads and encodes them, as torch's DataLoader does with num_workers=0; FFCV reads
      0 as every core).  Threads or processes: see ``from_indexed_dataset``.
    on_error: 'fail' stops at the first sample that cannot be encoded (nothing is written);
      'skip' leaves such samples out, lists them in the report and in ``<path>.errors.tsv``.
    progress: show a progress bar (images/s, ETA) on stderr.
    """

    def __init__(self, fname: str | os.PathLike, fields: Mapping[str, Field],
                 page_size: int = DEFAULT_PAGE_SIZE, num_workers: int = -1,
                 on_error: str = "fail", progress: bool = True):
        fmt.check_page_size(page_size)
        if on_error not in ("fail", "skip"):
            raise ValueError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
        if not fields:
            raise ValueError("a .beton file needs at least one field")
        for name, fld in fields.items():
            fmt.encode_name(name)
            if not isinstance(fld, Field):
                raise TypeError(f"field {name!r} is a {type(fld).__name__}, not a "
                                f"fastdata.fields.Field")
        self.path = self.fname = os.fspath(fname)
        self.fields = dict(fields)
        self.page_size = page_size
        self.num_workers = resolve_workers(num_workers)
        self.on_error = on_error
        self.progress = progress
        # FFCV-style fields are encoded by the calling thread, not by the workers.
        self._worker_fields = [None if is_ffcv_style(f) else f for f in self.fields.values()]

    def from_indexed_dataset(self, dataset: Any, indices: Optional[Sequence[int]] = None,
                             chunksize: int = 100, shuffle_indices: bool = False, *,
                             describe: Optional[Callable[[int], str]] = None,
                             worker_type: Optional[str] = None,
                             start_method: Optional[str] = None) -> WriteReport:
        """Write ``dataset[i]`` (a tuple in field order) for each i of ``indices`` (default
        all), record k holding ``dataset[indices[k]]``, as FFCV's method of the same name.

        chunksize: samples per worker task (FFCV's per-worker chunk); up to 2 x num_workers
          chunks of encoded samples are held in memory at once.
        shuffle_indices: write the samples in an order shuffled with numpy's global RNG,
          exactly as FFCV (``np.random.shuffle``: after the same ``np.random.seed`` the order is
          FFCV's); ``indices`` itself is not changed (FFCV shuffles it in place).
        describe(i): names source sample i in error messages (default "sample i").
        worker_type: 'process' runs ``dataset[i]`` in worker processes, so that each record is
          exactly ``dataset[i]`` even when ``__getitem__`` uses process-global state (numpy's
          global RNG); 'thread' in threads of this process (for thread-safe datasets; no
          copies).  Default: 'thread' for a list or tuple (indexing runs no dataset code),
          'process' otherwise.
        start_method: 'fork' or 'spawn' for worker processes (default: fork where available
          and safe, else spawn; spawn needs a picklable dataset)."""
        if isinstance(chunksize, bool) or int(chunksize) != chunksize or chunksize < 1:
            raise ValueError(f"chunksize must be a positive number of samples, got "
                             f"{chunksize!r}")
        chunksize = int(chunksize)
        if worker_type is None:
            worker_type = "thread" if isinstance(dataset, (list, tuple)) else "process"
        if worker_type not in WORKER_TYPES:
            raise ValueError(f"worker_type must be one of {WORKER_TYPES}, got {worker_type!r}")
        order = np.arange(len(dataset)) if indices is None else (
            indices.copy() if isinstance(indices, np.ndarray) else list(indices))
        if shuffle_indices:
            np.random.shuffle(order)
        order = [int(i) for i in order]
        name = (lambda k: describe(order[k])) if describe else (lambda k: f"sample {order[k]}")
        index_of = order.__getitem__
        if worker_type == "thread" or self.num_workers == 0:
            return self.write(len(order), lambda k: dataset[order[k]], describe=name,
                              source_index=index_of, chunksize=chunksize)
        n = len(order)
        tasks = ((_process_items, (list(zip(range(s, min(s + chunksize, n)),
                                            order[s:s + chunksize])),))
                 for s in range(0, n, chunksize))

        def what(t: int) -> str:
            return f"{name(t * chunksize)} to {name(min((t + 1) * chunksize, n) - 1)}"

        return self._write_checked(n, name, index_of, lambda: self._process_results(
            dataset, tasks, 2 * self.num_workers, what, start_method, "dataset"))

    def from_webdataset(self, shards: Sequence[str], pipeline: Callable[[Any], Any], *,
                        start_method: Optional[str] = None) -> WriteReport:
        """Write the samples of webdataset ``shards`` (a list of paths or URLs), as FFCV's
        method of the same name: ``pipeline(webdataset.WebDataset(shard))`` must give each
        shard's samples as tuples in field order.  The samples are counted first (one pass over
        every shard, as FFCV does), then written shard after shard, in order; ``pipeline`` runs
        in worker processes (each takes whole shards).  Needs the ``webdataset`` package."""
        shards = [os.fspath(s) for s in shards]
        if not shards:
            raise WriteError(f"nothing to write to {self.path}: no shards")
        if importlib.util.find_spec("webdataset") is None:
            raise WriteError("from_webdataset needs the webdataset package "
                             "(pip install webdataset)")
        lengths = self._count_shards(shards, pipeline, start_method)
        offsets = np.cumsum([0] + lengths).tolist()

        def name(k: int) -> str:
            t = bisect.bisect_right(offsets, k) - 1
            return f"{shards[t]} sample {k - offsets[t]}"

        def checked(results: Iterator[tuple[int, Any]]) -> Iterator[tuple[int, Any]]:
            expected, total = 0, offsets[-1]
            for k, outcome in results:
                if k != expected or k >= total:
                    raise mismatch(min(k, expected))
                expected += 1
                yield k, outcome
            if expected != total:
                raise mismatch(expected)

        def mismatch(k: int) -> WriteError:
            t = min(bisect.bisect_right(offsets, k) - 1, len(shards) - 1)
            return WriteError(f"{shards[t]}: the pipeline gave a different number of samples "
                              f"when written than when counted ({lengths[t]}); it must give "
                              f"the same samples each time")

        names = list(self.fields)
        if self.num_workers == 0:
            return self._write_checked(offsets[-1], name, lambda k: k, lambda: checked(
                pair for t, shard in enumerate(shards) for pair in shard_results(
                    shard, offsets[t], pipeline, self._worker_fields, names, False)))
        tasks = ((_process_shard, (shard, offsets[t])) for t, shard in enumerate(shards))
        return self._write_checked(offsets[-1], name, lambda k: k, lambda: checked(
            self._process_results(pipeline, tasks, self.num_workers + 1,
                                  lambda t: f"shard {shards[t]}", start_method, "pipeline")))

    def _count_shards(self, shards: list[str], pipeline: Callable,
                      start_method: Optional[str]) -> list[int]:
        if self.num_workers == 0:
            return [count_samples(shard, pipeline) for shard in shards]
        try:
            pool = process_pool(min(self.num_workers, len(shards)), pipeline,
                                self._worker_fields, list(self.fields), start_method,
                                "pipeline")
        except ValueError as err:
            raise WriteError(str(err)) from None
        try:
            futures = [pool.submit(_count_shard, shard) for shard in shards]
            lengths = []
            for shard, future in zip(shards, futures):
                try:
                    lengths.append(int(future.result()))
                except (KeyboardInterrupt, SystemExit):
                    raise
                except BaseException as err:
                    raise WriteError(f"{shard}: counting its samples failed: "
                                     f"{type(err).__name__}: {err}") from err
        except BaseException:
            stop_pool(pool)
            raise
        pool.shutdown()
        return lengths

    def write(self, num_samples: int, load: Callable[[int], tuple],
              describe: Callable[[int], str] = lambda k: f"sample {k}",
              source_index: Callable[[int], int] = lambda k: k,
              chunksize: int = 8) -> WriteReport:
        """Write samples ``load(0) .. load(num_samples - 1)``; ``load`` runs in worker
        threads (so it must be thread-safe), ``chunksize`` samples per task.

        First removes the temporary files that killed writers of this output left (see
        remove_stale_partials).  Called from the main thread of a process whose SIGTERM has its
        default action, a SIGTERM during the write removes the temporary file and raises
        WriteTerminated (exit status 143 unless caught)."""
        return self._write_checked(num_samples, describe, source_index,
                                   lambda: self._thread_results(num_samples, load, source_index,
                                                                chunksize))

    def _write_checked(self, num_samples: int, describe: Callable[[int], str],
                       source_index: Callable[[int], int],
                       results: Callable[[], Iterator[tuple[int, Any]]]) -> WriteReport:
        if num_samples <= 0:
            raise WriteError(f"nothing to write to {self.path}: no samples")
        out_dir = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(out_dir):
            raise WriteError(f"output folder {out_dir} does not exist")
        with _SigtermRaises():
            return self._write_atomically(num_samples, results, describe, source_index)

    def _write_atomically(self, num_samples: int, results, describe, source_index
                          ) -> WriteReport:
        started = time.perf_counter()
        with atomic_output(self.path) as (fd, _):
            written, failures = self._write_file(fd, num_samples, results, describe,
                                                 source_index)
        seconds = time.perf_counter() - started
        error_log = self._write_error_log(failures)
        return WriteReport(self.path, written, len(failures), seconds, os.path.getsize(self.path),
                           failures, error_log)

    def _write_error_log(self, failures: list[SampleFailure]) -> Optional[str]:
        log_path = self.path + ".errors.tsv"
        if not failures:
            if os.path.exists(log_path):
                os.unlink(log_path)    # stale: it described an earlier write
            return None
        with open(log_path, "w", encoding="utf-8") as log:
            log.write("source_index\tsource\treason\n")
            for fail in failures:
                reason = fail.reason.replace("\t", " ").replace("\n", " ")
                log.write(f"{fail.index}\t{fail.source}\t{reason}\n")
        return log_path

    def _thread_results(self, num_samples: int, load: Callable[[int], Any],
                        source_index: Callable[[int], int], chunksize: int
                        ) -> Iterator[tuple[int, Any]]:
        names = list(self.fields)
        chunks = [range(s, min(s + chunksize, num_samples))
                  for s in range(0, num_samples, chunksize)]
        if self.num_workers == 0:
            for chunk in chunks:
                yield from encode_positions(load, source_index, self._worker_fields, names, chunk)
            return
        pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="fastdata-writer")
        tasks = ((encode_positions, (load, source_index, self._worker_fields, names, chunk))
                 for chunk in chunks)
        try:
            yield from ordered_results(pool, tasks, 4 * self.num_workers,
                                       lambda t: f"samples {chunks[t].start}-{chunks[t].stop}")
        except BaseException:
            # Stopped (failure, Ctrl-C, SIGTERM): samples still loading only write to memory, so
            # the temporary file is removed now rather than after the slowest of them returns.
            stop_pool(pool)
            raise
        pool.shutdown()

    def _process_results(self, source: Any, tasks, window: int, what: Callable[[int], str],
                         start_method: Optional[str], kind: str) -> Iterator[tuple[int, Any]]:
        try:
            pool = process_pool(self.num_workers, source, self._worker_fields,
                                list(self.fields), start_method, kind)
        except ValueError as err:
            raise WriteError(str(err)) from None
        try:
            yield from ordered_results(pool, tasks, window, what)
        except WorkerDied as err:
            stop_pool(pool)
            raise WriteError(str(err)) from None
        except BaseException:
            stop_pool(pool)
            raise
        pool.shutdown()

    def _write_file(self, fd: int, num_samples: int, results, describe, source_index
                    ) -> tuple[int, list[SampleFailure]]:
        fields = list(self.fields.values())
        record_dtype = fmt.metadata_dtype([fld.metadata_dtype for fld in fields])
        metadata = np.zeros(num_samples, dtype=record_dtype)
        side = {k: np.zeros(num_samples, dtype=fld.side_table_dtype)
                for k, fld in enumerate(fields)
                if fld.side_table_dtype is not None and self._worker_fields[k] is not None}
        data_start = fmt.data_start(len(fields), num_samples, record_dtype.itemsize, self.page_size)
        sink = _PageSink(fd)
        try:
            return self._pack(fd, sink, fields, record_dtype, metadata, side, data_start,
                              num_samples, results, describe, source_index)
        finally:
            try:
                sink.close()    # no page may still be in flight when the file is closed
            except OSError:
                pass            # already reported by _pack, or superseded by its exception

    def _place(self, packer: _PagePacker, written: int, index: int, fields: list[Field],
               encoded: list, metadata: np.ndarray, side: dict) -> None:
        """Place one encoded sample as record ``written`` (FFCV-style fields encoded now)."""
        calls = [(fields[j], e.value) for j, e in enumerate(encoded) if isinstance(e, Deferred)]
        payloads = [None if isinstance(e, Deferred) else e.payload for e in encoded]
        if not calls:
            ptrs = packer.place(written, payloads)
            metadata[written] = tuple(fld.metadata_record(e.meta, p)
                                      for fld, e, p in zip(fields, encoded, ptrs))
        else:
            ptrs, records = packer.place_with_malloc(written, index, payloads, calls)
            records = iter(records)
            for j, (fld, e, p) in enumerate(zip(fields, encoded, ptrs)):
                metadata[f"f{j}"][written] = next(records) if isinstance(e, Deferred) \
                    else fld.metadata_record(e.meta, p)
        for j, table in side.items():
            table[written] = encoded[j].side

    def _pack(self, fd: int, sink: "_PageSink", fields: list[Field], record_dtype: np.dtype,
              metadata: np.ndarray, side: dict, data_start: int, num_samples: int, results,
              describe, source_index) -> tuple[int, list[SampleFailure]]:
        packer = _PagePacker(sink, data_start, self.page_size)
        failures: list[SampleFailure] = []
        written = 0
        bar = _progress_bar(num_samples, self.progress, os.path.basename(self.path))
        try:
            with closing(results()) as outcomes:
                for k, result in outcomes:
                    if isinstance(result, Crashed):
                        message = f"{describe(k)}: {result.message}"
                        if result.remote_traceback:
                            message += f"\n\nin the worker process:\n{result.remote_traceback}"
                        raise WriteError(message) from result.error
                    if isinstance(result, list):
                        try:
                            self._place(packer, written, source_index(k), fields, result,
                                        metadata, side)
                            written += 1
                        except SAMPLE_ERRORS as err:
                            result = Failed(str(err) or type(err).__name__)
                        except Exception as err:    # noqa: BLE001 - an FFCV-style encode
                            raise WriteError(f"{describe(k)}: {type(err).__name__}: {err}"
                                             ) from err
                    if isinstance(result, Failed):
                        failure = SampleFailure(source_index(k), describe(k), result.reason)
                        if self.on_error == "fail":
                            raise WriteError(f"{failure.source}: {failure.reason}")
                        failures.append(failure)
                        if bar is not None:
                            bar.set_postfix(skipped=len(failures), refresh=False)
                    if bar is not None:
                        bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        if written == 0:
            raise WriteError(f"no sample could be written to {self.path} "
                             f"({len(failures)} failed; first: {failures[0] if failures else '-'})")

        arguments = []
        for k, fld in enumerate(fields):
            location = None
            if k in side:
                table = side[k][:written]
                location = (packer.place_table(table.tobytes()), written)
            arguments.append(fld.to_arguments(location))
        data_end = packer.finish()
        sink.close()
        meta_start = fmt.metadata_start(len(fields))
        alloc_table_ptr = data_end or meta_start + written * record_dtype.itemsize

        table = np.array(packer.alloc, dtype=fmt.ALLOC_ENTRY_DTYPE)
        _pwrite_all(fd, alloc_table_ptr, table.tobytes())
        os.ftruncate(fd, alloc_table_ptr + table.nbytes)
        header = np.zeros((), dtype=fmt.HEADER_DTYPE)
        header["version"] = fmt.VERSION
        header["num_fields"] = len(fields)
        header["page_size"] = self.page_size
        header["num_samples"] = written
        header["alloc_table_ptr"] = alloc_table_ptr
        descriptors = np.zeros(len(fields), dtype=fmt.FIELD_DESC_DTYPE)
        for k, (name, fld) in enumerate(self.fields.items()):
            # As FFCV: a field encoded in FFCV's way is a custom field (type 255); readers need
            # its class in custom_fields.
            descriptors[k]["type_id"] = CUSTOM_TYPE_ID if self._worker_fields[k] is None \
                else fld.TYPE_ID
            descriptors[k]["name"] = fmt.encode_name(name)
            descriptors[k]["arguments"] = arguments[k]
        _pwrite_all(fd, 0, header.tobytes() + descriptors.tobytes() + metadata[:written].tobytes())
        return written, failures


_PARTIAL_SUFFIX = ".partial"


def _host_tag() -> str:
    """8 hex digits naming this machine: a writer on another machine sharing the output folder
    (whose pid means nothing here) must never be taken for a dead one."""
    return f"{zlib.crc32(socket.gethostname().encode()):08x}"


@contextmanager
def atomic_output(path: str) -> Iterator[tuple[int, str]]:
    """(file descriptor, path) of a new temporary file beside ``path``, made after removing
    the temporary files killed writers of ``path`` left.  When the block ends without error the
    file is fsynced, given the umask's permissions and renamed over ``path``; on any error
    (SIGTERM's WriteTerminated included) it is removed and ``path`` is left as it was."""
    remove_stale_partials(path)
    fd, tmp_path = _create_partial(path)
    try:
        try:
            yield fd, tmp_path
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except BaseException:
        try:
            os.unlink(tmp_path)
        except FileNotFoundError:
            pass
        raise


def _create_partial(path: str) -> tuple[int, str]:
    """Create ``<path>.<host tag>.<pid>.<8 random hex digits>.partial`` beside ``path`` (same
    folder, so the final rename is atomic), readable by this user only until complete; returns
    its descriptor and path."""
    out_dir, base = os.path.split(os.path.abspath(path))
    prefix = os.path.join(out_dir, f"{base}.{_host_tag()}.{os.getpid()}.")
    while True:
        tmp_path = prefix + secrets.token_hex(4) + _PARTIAL_SUFFIX
        try:
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
            return os.open(tmp_path, flags, 0o600), tmp_path
        except FileExistsError:
            continue


def _process_alive(pid: int) -> bool:
    """Whether a process with this pid exists here (when unsure: yes)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True     # another user's process; a number no pid can be: not ours to judge
    return True


def remove_stale_partials(path: str | os.PathLike) -> list[str]:
    """Remove the temporary files that writers of ``path`` on this machine left behind when they
    were killed (SIGKILL, power loss): those whose pid names no running process.  A file whose
    pid runs (its writer, or a process that reused the pid) is kept, as is any file not named
    exactly as this module names the temporary files of ``path``.  Returns the removed paths."""
    out_dir, base = os.path.split(os.path.abspath(os.fspath(path)))
    pattern = re.compile(re.escape(f"{base}.{_host_tag()}.") + r"([1-9][0-9]*)\.[0-9a-f]{8}"
                         + re.escape(_PARTIAL_SUFFIX))
    try:
        names = os.listdir(out_dir)
    except OSError:
        return []
    removed = []
    for name in names:
        match = pattern.fullmatch(name)
        if match is None or _process_alive(int(match.group(1))):
            continue
        try:
            os.unlink(os.path.join(out_dir, name))
            removed.append(os.path.join(out_dir, name))
        except OSError:
            pass        # gone already (another writer removed it) or not ours to remove
    return removed


class _SigtermRaises:
    """While active, SIGTERM raises WriteTerminated in the main thread (as SIGINT raises
    KeyboardInterrupt), so that the write removes its temporary file before the process ends.

    Only where SIGTERM would otherwise end the process on the spot (the default action): a
    handler of the caller's own, or an ignored SIGTERM, is left in place (if that handler raises,
    the write cleans up likewise), and outside the main thread no handler can be set.  A second
    SIGTERM ends the process at once.  The previous handler is restored on exit."""

    def __enter__(self) -> "_SigtermRaises":
        self.installed = (threading.current_thread() is threading.main_thread()
                          and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
        if self.installed:
            signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def _on_sigterm(self, signum, frame) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise WriteTerminated()

    def __exit__(self, *exc_info) -> None:
        if self.installed and signal.getsignal(signal.SIGTERM) == self._on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _progress_bar(total: int, enabled: bool, name: str):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, unit="img", desc=f"writing {name}", smoothing=0.1,
                dynamic_ncols=True)
