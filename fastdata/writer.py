"""Writing a ``.beton`` file: encode samples in parallel, lay them into pages, finalize atomically.

Worker threads load and encode samples (JPEG decoding, resizing and encoding release the GIL, so
threads scale across cores with no copies between processes).  The calling thread places the
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
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field as dataclass_field
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import numpy as np

from . import format as fmt
from .constants import DEFAULT_PAGE_SIZE
from .fields import Field
from .workers import resolve_workers


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


class DatasetWriter:
    """Writes samples into a ``.beton`` file.

    fields: an ordered mapping of field name to Field; each sample is a tuple in that order.
    num_workers: threads that load and encode samples (-1: every core; 0: none, the calling
    thread loads and encodes them, as torch's DataLoader does with num_workers=0).
    on_error: 'fail' stops at the first sample that cannot be encoded (nothing is written);
      'skip' leaves such samples out, lists them in the report and in ``<path>.errors.tsv``.
    progress: show a progress bar (images/s, ETA) on stderr.
    """

    def __init__(self, path: str | os.PathLike, fields: Mapping[str, Field],
                 page_size: int = DEFAULT_PAGE_SIZE, num_workers: int = -1,
                 on_error: str = "fail", progress: bool = True):
        fmt.check_page_size(page_size)
        if on_error not in ("fail", "skip"):
            raise ValueError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
        if not fields:
            raise ValueError("a .beton file needs at least one field")
        for name in fields:
            fmt.encode_name(name)
        self.path = os.fspath(path)
        self.fields = dict(fields)
        self.page_size = page_size
        self.num_workers = resolve_workers(num_workers)
        self.on_error = on_error
        self.progress = progress

    def from_indexed_dataset(self, dataset: Any, indices: Optional[Sequence[int]] = None,
                             describe: Optional[Callable[[int], str]] = None) -> WriteReport:
        """Write ``dataset[i]`` (a tuple in field order) for each i of ``indices`` (default all).

        ``describe(i)`` names source sample i in error messages (default "sample i")."""
        indices = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
        return self.write(len(indices), lambda k: dataset[indices[k]],
                          describe=(lambda k: describe(indices[k])) if describe
                          else (lambda k: f"sample {indices[k]}"),
                          source_index=lambda k: indices[k])

    def write(self, num_samples: int, load: Callable[[int], tuple],
              describe: Callable[[int], str] = lambda k: f"sample {k}",
              source_index: Callable[[int], int] = lambda k: k) -> WriteReport:
        """Write samples ``load(0) .. load(num_samples - 1)``; ``load`` runs in worker threads.

        First removes the temporary files that killed writers of this output left (see
        remove_stale_partials).  Called from the main thread of a process whose SIGTERM has its
        default action, a SIGTERM during the write removes the temporary file and raises
        WriteTerminated (exit status 143 unless caught)."""
        if num_samples <= 0:
            raise WriteError(f"nothing to write to {self.path}: no samples")
        out_dir = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(out_dir):
            raise WriteError(f"output folder {out_dir} does not exist")
        with _SigtermRaises():
            return self._write_atomically(num_samples, load, describe, source_index)

    def _write_atomically(self, num_samples: int, load, describe, source_index) -> WriteReport:
        remove_stale_partials(self.path)
        started = time.perf_counter()
        fd, tmp_path = _create_partial(self.path)
        try:
            try:
                written, failures = self._write_file(fd, num_samples, load, describe,
                                                     source_index)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.chmod(tmp_path, 0o666 & ~_umask())
            os.replace(tmp_path, self.path)
        except BaseException:
            try:
                os.unlink(tmp_path)
            except FileNotFoundError:
                pass
            raise
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

    def _encode_chunk(self, ks: range, load: Callable[[int], tuple],
                      source_index: Callable[[int], int], describe: Callable[[int], str]
                      ) -> list[tuple[int, Any]]:
        fields = list(self.fields.values())
        names = list(self.fields)
        results = []
        for k in ks:
            index = source_index(k)
            try:
                sample = load(k)
                if not isinstance(sample, (tuple, list)) or len(sample) != len(fields):
                    raise TypeError(f"expected a tuple of {len(fields)} values ({', '.join(names)})"
                                    f", got {type(sample).__name__}"
                                    + (f" of {len(sample)}" if isinstance(sample, (tuple, list))
                                       else ""))
                encoded = []
                for name, fld, value in zip(names, fields, sample):
                    try:
                        encoded.append(fld.encode(value, index))
                    except (ValueError, TypeError, OSError) as err:
                        raise type(err)(f"field {name!r}: {err}") from None
                results.append((k, encoded))
            except (ValueError, TypeError, OSError, MemoryError) as err:
                results.append((k, SampleFailure(index, describe(k), str(err) or
                                                 type(err).__name__)))
        return results

    def _encoded_in_order(self, num_samples: int, load, describe, source_index
                          ) -> Iterator[tuple[int, Any]]:
        chunk = 8
        chunks = [range(s, min(s + chunk, num_samples)) for s in range(0, num_samples, chunk)]
        if self.num_workers == 0:
            for c in chunks:
                yield from self._encode_chunk(c, load, source_index, describe)
            return
        window = 4 * self.num_workers
        pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="fastdata-writer")
        pending = []
        next_chunk = 0
        try:
            while pending or next_chunk < len(chunks):
                while next_chunk < len(chunks) and len(pending) < window:
                    pending.append(pool.submit(self._encode_chunk, chunks[next_chunk], load,
                                               source_index, describe))
                    next_chunk += 1
                yield from pending.pop(0).result()
        except BaseException:
            # Stopped (failure, Ctrl-C, SIGTERM): samples still loading only write to memory, so
            # the temporary file is removed now rather than after the slowest of them returns.
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()

    def _write_file(self, fd: int, num_samples: int, load, describe, source_index
                    ) -> tuple[int, list[SampleFailure]]:
        fields = list(self.fields.values())
        record_dtype = fmt.metadata_dtype([fld.metadata_dtype for fld in fields])
        metadata = np.zeros(num_samples, dtype=record_dtype)
        side = {k: np.zeros(num_samples, dtype=fld.side_table_dtype)
                for k, fld in enumerate(fields) if fld.side_table_dtype is not None}
        data_start = fmt.data_start(len(fields), num_samples, record_dtype.itemsize, self.page_size)
        sink = _PageSink(fd)
        try:
            return self._pack(fd, sink, fields, record_dtype, metadata, side, data_start,
                              num_samples, load, describe, source_index)
        finally:
            try:
                sink.close()    # no page may still be in flight when the file is closed
            except OSError:
                pass            # already reported by _pack, or superseded by its exception

    def _pack(self, fd: int, sink: "_PageSink", fields: list[Field], record_dtype: np.dtype,
              metadata: np.ndarray, side: dict, data_start: int, num_samples: int, load,
              describe, source_index) -> tuple[int, list[SampleFailure]]:
        packer = _PagePacker(sink, data_start, self.page_size)
        failures: list[SampleFailure] = []
        written = 0
        bar = _progress_bar(num_samples, self.progress, os.path.basename(self.path))
        try:
            for k, result in self._encoded_in_order(num_samples, load, describe, source_index):
                if isinstance(result, list):
                    try:
                        ptrs = packer.place(written, [e.payload for e in result])
                        metadata[written] = tuple(fld.metadata_record(e.meta, p)
                                                  for fld, e, p in zip(fields, result, ptrs))
                        for j, table in side.items():
                            table[written] = result[j].side
                        written += 1
                    except ValueError as err:
                        result = SampleFailure(source_index(k), describe(k), str(err))
                if isinstance(result, SampleFailure):
                    if self.on_error == "fail":
                        raise WriteError(f"{result.source}: {result.reason}")
                    failures.append(result)
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
            descriptors[k]["type_id"] = fld.TYPE_ID
            descriptors[k]["name"] = fmt.encode_name(name)
            descriptors[k]["arguments"] = arguments[k]
        _pwrite_all(fd, 0, header.tobytes() + descriptors.tobytes() + metadata[:written].tobytes())
        return written, failures


_PARTIAL_SUFFIX = ".partial"


def _host_tag() -> str:
    """8 hex digits naming this machine: a writer on another machine sharing the output folder
    (whose pid means nothing here) must never be taken for a dead one."""
    return f"{zlib.crc32(socket.gethostname().encode()):08x}"


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
