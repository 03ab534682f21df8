"""Remote ``.beton`` files: fsspec URLs read page by page into a bounded local page cache.

A Reader opened on a URL (``s3://``, ``gs://``, ``http(s)://``, ``file://``, any fsspec protocol)
gets a ``RemotePages``: an anonymous, lazily backed memory map the size of the remote file, which
the Reader exposes as ``reader.data`` exactly as it exposes a local file's map.  Decoders keep
reading records in place through absolute pointers; what changes is that a page's bytes are only
there once fetched.  So:

- the Reader fetches (and pins for good) the pages holding the header, descriptors, metadata,
  allocation table and side tables at open, then validates them as for a local file;
- the Loader, per epoch, runs a ``PageFeed``: it knows every batch's samples, so it fetches the
  pages of the next batches ahead of the order (bounded: ``RemoteSettings.ahead_pages``) on
  ``RemoteSettings.fetch_threads`` threads, and before a batch is decoded waits until every
  page any of its samples' payloads touches is present;
- pages are kept up to a limit and evicted least recently used, never while a batch that is
  queued, decoding or prefetched needs them.  With ``cache_dir`` every fetched page is also
  written to a file of its own there (atomically: a temporary file, then ``os.replace``), so
  several processes of a node share the pages and a later epoch or run reads them locally.

Faults: every remote call has a timeout (``RemoteSettings.timeout_s``); transient errors
(timeouts, connection resets, truncated bodies, HTTP 5xx, throttling) are retried with
exponential backoff and counted in ``RemotePages.stats``; a page still missing after the
retries, or failing with a non-transient error, raises ``RemotePageError`` naming the URL, the
page and its byte range.  A cached page file whose size is wrong is fetched again.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import mmap
import os
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from . import format as fmt

logger = logging.getLogger("fastdata")

#: With a cache_dir, pages kept in process memory beyond those pinned by batches in flight: the
#: directory is the cache, memory a small window over it (reloading a page from the directory
#: is a local read).
MEMORY_PAGES_WITH_CACHE_DIR = 16

_MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000 if sys.platform.startswith("linux") else 0)

#: Error codes S3-compatible services (and GCS's XML API) use for "try again later".
_TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout",
                    "RequestTimeTooSkewed", "ServiceUnavailable", "InternalError",
                    "RequestLimitExceeded", "TooManyRequests", "503", "500", "502", "504"}


def is_url(path: str) -> bool:
    """True for an fsspec URL (``protocol://...``); plain paths are local files."""
    return "://" in path


class RemoteError(OSError):
    """A remote ``.beton`` file could not be read."""


class RemotePageError(RemoteError):
    """A page of a remote file could not be fetched (after retries) or arrived short.

    ``url``, ``page`` (absolute page number, or -1 for a read before the page size is known),
    ``start`` and ``stop`` (its byte range, stop exclusive) and ``reason`` say which and why."""

    def __init__(self, url: str, page: int, start: int, stop: int, reason: str):
        where = f"page {page}, " if page >= 0 else ""
        super().__init__(f"{url}: {where}bytes [{start}, {stop}): {reason}")
        self.url, self.page, self.start, self.stop, self.reason = url, page, start, stop, reason


class EpochStopped(Exception):
    """The epoch a wait belonged to was stopped (close(), break): nothing is wrong."""


@dataclass
class RemoteSettings:
    """How a remote file is fetched.

    timeout_s: seconds one remote call (info or one page's range read) may take.
    retries: further attempts after a transient failure (so retries + 1 attempts in all).
    backoff_s: wait before the first retry, in seconds; doubles each retry, at most
      max_backoff_s.
    fetch_threads: pages fetched at once.
    ahead_pages: pages fetched ahead of the batch being decoded (the look-ahead window).
    """
    timeout_s: float = 30.0
    retries: int = 5
    backoff_s: float = 0.2
    max_backoff_s: float = 10.0
    fetch_threads: int = 8
    ahead_pages: int = 32

    def __post_init__(self) -> None:
        if self.timeout_s <= 0 or self.retries < 0 or self.backoff_s < 0 or \
                self.fetch_threads < 1 or self.ahead_pages < 1:
            raise ValueError(f"invalid RemoteSettings {self}")


@dataclass
class RemoteStats:
    """Counts since the file was opened (bytes are payload bytes received, whole attempts)."""
    requests: int = 0           # range reads sent (every attempt)
    retries: int = 0            # attempts repeated after a transient failure
    pages_fetched: int = 0      # pages fetched from the remote file
    bytes_fetched: int = 0      # bytes of the pages fetched from the remote file
    pages_from_cache_dir: int = 0   # pages loaded from cache_dir instead
    corrupt_cache_files: int = 0    # cache_dir page files of the wrong size, fetched again
    evictions: int = 0          # pages dropped from memory to stay under the limit
    errors: list = field(default_factory=list)   # each transient error, oldest first

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    def add_error(self, description: str) -> None:
        with self._lock:
            self.errors.append(description)


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` (or an error it was raised from) is worth retrying: a timeout, a reset
    or refused connection, a truncated body, HTTP 5xx / 429, or a throttling code."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, (TimeoutError, ConnectionError)):
            return True
        if isinstance(error, OSError) and error.errno in (errno.ECONNRESET, errno.ECONNABORTED,
                                                          errno.EPIPE, errno.ETIMEDOUT):
            return True
        name = type(error).__name__
        if name in ("FSTimeoutError", "ReadTimeoutError", "ConnectTimeoutError",
                    "EndpointConnectionError", "ConnectionClosedError", "IncompleteReadError",
                    "ResponseStreamingError", "IncompleteRead", "ClientPayloadError",
                    "ServerDisconnectedError", "ClientConnectionError", "ClientOSError",
                    "ServerTimeoutError", "HTTPClientError", "ResponseParserError",
                    "ContentLengthError", "RemoteProtocolError"):
            return True
        status = getattr(error, "status", None) or getattr(error, "code", None)
        response = getattr(error, "response", None)
        if isinstance(response, Mapping):
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", status)
            if str(response.get("Error", {}).get("Code", "")) in _TRANSIENT_CODES:
                return True
        if isinstance(status, int) and (status >= 500 or status == 429):
            return True
        error = error.__cause__ or error.__context__
    return False


def _describe(error: BaseException) -> str:
    text = str(error) or repr(error)
    return f"{type(error).__name__}: {text}"


class RemoteFile:
    """One remote file through fsspec: its size, and byte ranges read with a timeout and
    retried with backoff on transient errors."""

    def __init__(self, url: str, storage_options: Optional[Mapping[str, Any]],
                 settings: RemoteSettings, stats: RemoteStats):
        try:
            import fsspec
        except ImportError:
            raise ImportError(f"{url}: reading a URL needs fsspec (and the protocol's package, "
                              f"e.g. s3fs): pip install 'fastdata[remote]'") from None
        self.url, self.settings, self.stats = url, settings, stats
        options = dict(storage_options or {})
        protocol = url.split("://", 1)[0]
        if protocol in ("s3", "s3a"):
            # The retries are ours (counted, with our backoff): botocore's and s3fs's are off,
            # and botocore's timeouts are ours too.  A fresh instance, so that the user's other
            # s3fs instances keep their settings.
            config = {"connect_timeout": settings.timeout_s, "read_timeout": settings.timeout_s,
                      "retries": {"mode": "standard", "total_max_attempts": 1}}
            config.update(options.get("config_kwargs") or {})
            options["config_kwargs"] = config
            options.setdefault("skip_instance_cache", True)
        try:
            self.fs, self.path = fsspec.core.url_to_fs(url, **options)
        except ImportError as err:
            raise ImportError(f"{url}: {err} (pip install 'fastdata[remote]')") from None
        if protocol in ("s3", "s3a") and hasattr(self.fs, "retries"):
            self.fs.retries = 1
        info = self._call("info", lambda: self._info(), 0, 0)
        if info.get("type") not in (None, "file"):
            raise RemoteError(f"{url}: not a file (fsspec says type {info.get('type')!r})")
        size = info.get("size")
        if size is None:
            raise RemoteError(f"{url}: the server does not say the file's size")
        self.size = int(size)
        tag = info.get("ETag") or info.get("etag") or info.get("mtime") or \
            info.get("LastModified") or info.get("last_modified") or ""
        # Pages cached under this key belong to this version of the file: a new upload (new
        # ETag or size) gets a key of its own.
        self.cache_key = hashlib.sha256(f"{url}\0{self.size}\0{tag}".encode()).hexdigest()[:20]

    def _info(self) -> dict:
        if getattr(self.fs, "async_impl", False):
            from fsspec.asyn import sync
            return sync(self.fs.loop, self.fs._info, self.path, timeout=self.settings.timeout_s)
        return self.fs.info(self.path)

    def _cat(self, start: int, stop: int) -> bytes:
        if getattr(self.fs, "async_impl", False):
            from fsspec.asyn import sync
            return sync(self.fs.loop, self.fs._cat_file, self.path, start=start, end=stop,
                        timeout=self.settings.timeout_s)
        return self.fs.cat_file(self.path, start=start, end=stop)

    def read(self, start: int, stop: int, page: int = -1,
             stop_event: Optional[threading.Event] = None) -> bytes:
        """Bytes [start, stop) of the file; RemotePageError once the retries are spent, at once
        for a non-transient error; EpochStopped if ``stop_event`` is set meanwhile."""
        return self._call("read", lambda: self._cat(start, stop), start, stop, page, stop_event,
                          expect=stop - start)

    def _call(self, what: str, call: Callable[[], Any], start: int, stop: int, page: int = -1,
              stop_event: Optional[threading.Event] = None, expect: Optional[int] = None) -> Any:
        settings = self.settings
        last = ""
        for attempt in range(settings.retries + 1):
            if stop_event is not None and stop_event.is_set():
                raise EpochStopped()
            if attempt:
                self.stats.add(retries=1)
                wait = min(settings.backoff_s * 2 ** (attempt - 1), settings.max_backoff_s)
                if stop_event is not None:
                    if stop_event.wait(wait):
                        raise EpochStopped()
                else:
                    time.sleep(wait)
            self.stats.add(requests=int(what == "read"))
            try:
                result = call()
            except FileNotFoundError as err:
                raise RemoteError(f"{self.url}: no such file ({_describe(err)})") from err
            except Exception as err:
                if not is_transient(err):
                    if what == "info":
                        raise RemoteError(f"{self.url}: {_describe(err)}") from err
                    raise RemotePageError(self.url, page, start, stop, _describe(err)) from err
                last = f"no answer within {settings.timeout_s} s" if type(err).__name__ in (
                    "FSTimeoutError", "TimeoutError") else _describe(err)
                self.stats.add_error(last)
                logger.debug("%s: transient error (attempt %d): %s", self.url, attempt + 1, last)
                continue
            if expect is not None and len(result) != expect:
                last = f"arrived short: {len(result)} of {expect} bytes" if len(result) < expect \
                    else f"{len(result)} bytes came for a range of {expect} (Range ignored?)"
                self.stats.add_error(last)
                continue
            return result
        if what == "info":
            raise RemoteError(f"{self.url}: {settings.retries + 1} attempts failed; "
                              f"last: {last}")
        raise RemotePageError(self.url, page, start, stop,
                              f"{settings.retries + 1} attempts failed; last: {last}")


class RemotePages:
    """The local image of a remote file: ``data`` (uint8[size], read-only) over an anonymous
    memory map into which fetched pages are copied, which pages are present, which are pinned,
    and the optional page files in ``cache_dir``.  Thread-safe.

    cache_dir: a directory (shared by the processes of a node, created if missing) keeping each
      fetched page as a file; None keeps pages in memory only.
    cache_size: limit in bytes of the pages kept: in memory without cache_dir, in cache_dir for
      this file with it (memory then keeps MEMORY_PAGES_WITH_CACHE_DIR pages beyond those
      pinned).  None: no limit (the file's size).  Pages pinned by batches in flight or fetched
      ahead are never evicted, so the pages held may exceed a limit smaller than they are.
    """

    def __init__(self, url: str, storage_options: Optional[Mapping[str, Any]] = None,
                 cache_dir: Optional[str | os.PathLike] = None, cache_size: Optional[int] = None,
                 settings: Optional[RemoteSettings] = None):
        if cache_size is not None and int(cache_size) <= 0:
            raise ValueError(f"cache_size must be a positive number of bytes, got {cache_size}")
        self.url = url
        self.settings = settings or RemoteSettings()
        self.stats = RemoteStats()
        self.file = RemoteFile(url, storage_options, self.settings, self.stats)
        self.size = self.file.size
        self.page_size = self._page_size_from_header()
        self.num_pages = -(-self.size // self.page_size)
        self.cache_size = None if cache_size is None else int(cache_size)
        self.cache_dir: Optional[str] = None
        if cache_dir is not None:
            base = os.path.basename(self.file.path.rstrip("/")) or "file"
            self.cache_dir = os.path.join(os.fspath(cache_dir), f"{base}-{self.file.cache_key}")
            os.makedirs(self.cache_dir, exist_ok=True)
            self._remove_stale_temp_files()
        if self.cache_dir is None:
            self.memory_limit = self.cache_size
        else:
            self.memory_limit = MEMORY_PAGES_WITH_CACHE_DIR * self.page_size
        self._map = mmap.mmap(-1, max(self.size, 1),
                              flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_NORESERVE)
        self._writable = np.frombuffer(self._map, dtype=np.uint8)[:self.size]
        self.data = self._writable.view()
        self.data.flags.writeable = False
        self.present = np.zeros(self.num_pages, dtype=bool)
        self.pins = np.zeros(self.num_pages, dtype=np.int64)
        self.pinned_for_good = np.zeros(self.num_pages, dtype=bool)
        self._recent: OrderedDict[int, None] = OrderedDict()   # present pages, least recent first
        self._lock = threading.RLock()
        self._in_flight: dict[int, Future] = {}
        self._sample_pages: Optional[tuple[np.ndarray, np.ndarray]] = None
        self._closed = False

    def _page_size_from_header(self) -> int:
        if self.size < fmt.HEADER_SIZE:
            return fmt.MIN_PAGE_SIZE        # the Reader reports the short file
        header = np.frombuffer(self.file.read(0, fmt.HEADER_SIZE), dtype=fmt.HEADER_DTYPE)[0]
        page_size = int(header["page_size"])
        try:
            fmt.check_page_size(page_size)
        except fmt.FormatError:
            return fmt.MIN_PAGE_SIZE        # the Reader reports the bad header
        return page_size

    # -- pages ---------------------------------------------------------------------------------
    def page_range(self, page: int) -> tuple[int, int]:
        """Byte range [start, stop) of page ``page``."""
        start = page * self.page_size
        return start, min(start + self.page_size, self.size)

    def pages_of_range(self, start: int, stop: int) -> np.ndarray:
        """The pages bytes [start, stop) touch (int64)."""
        if stop <= start:
            return np.zeros(0, dtype=np.int64)
        return np.arange(start // self.page_size, (stop - 1) // self.page_size + 1,
                         dtype=np.int64)

    def ensure_range(self, start: int, stop: int, for_good: bool = False) -> None:
        """Make bytes [start, stop) present (fetching in parallel, blocking); ``for_good`` pins
        their pages until close (the Reader's metadata, tables and side tables)."""
        pages = self.pages_of_range(max(0, start), min(stop, self.size))
        if for_good:
            with self._lock:
                self.pinned_for_good[pages] = True
        self.fetch_pages(pages, None)

    def fetch_pages(self, pages: np.ndarray, stop_event: Optional[threading.Event],
                    pool: Optional[ThreadPoolExecutor] = None) -> None:
        """Make ``pages`` present: wait for those in flight, fetch the others (on ``pool``, or
        on a pool made for the call when several are missing)."""
        pages = np.asarray(pages, dtype=np.int64)
        if pool is None and np.count_nonzero(~self.present[pages]) > 1:
            with ThreadPoolExecutor(self.settings.fetch_threads, "fastdata-fetch") as own:
                wait_all(self.submit(pages, stop_event, own), stop_event)
            return
        wait_all(self.submit(pages, stop_event, pool), stop_event)

    def submit(self, pages: np.ndarray, stop_event: Optional[threading.Event],
               pool: Optional[ThreadPoolExecutor]) -> list[Future]:
        """Futures for ``pages`` being present (done at once for present ones).  Missing pages
        are fetched on ``pool``; without a pool, in the calling thread."""
        futures, to_run = [], []
        with self._lock:
            if self._closed:
                raise RemoteError(f"{self.url}: closed")
            for page in np.asarray(pages, dtype=np.int64).tolist():
                if self.present[page]:
                    self._recent.move_to_end(page)
                    continue
                future = self._in_flight.get(page)
                if future is None:
                    future = Future()
                    self._in_flight[page] = future
                    to_run.append((page, future))
                futures.append(future)
        for page, future in to_run:
            if pool is None:
                self._run_fetch(page, future, stop_event)
            else:
                pool.submit(self._run_fetch, page, future, stop_event)
        return futures

    def _run_fetch(self, page: int, future: Future, stop_event: Optional[threading.Event]) -> None:
        try:
            self._load(page, stop_event)
        except BaseException as err:
            with self._lock:
                self._in_flight.pop(page, None)
            future.set_exception(err)
            return
        with self._lock:
            self._in_flight.pop(page, None)
        future.set_result(None)

    def abandon(self, futures: Sequence[Future], error: BaseException) -> None:
        """Fail futures whose fetch will never run (its pool was shut down before it started)."""
        with self._lock:
            for page, future in list(self._in_flight.items()):
                if future in futures and not future.done():
                    del self._in_flight[page]
                    future.set_exception(error)

    def _load(self, page: int, stop_event: Optional[threading.Event]) -> None:
        start, stop = self.page_range(page)
        if not (self.cache_dir and self._load_from_dir(page, start, stop)):
            data = self.file.read(start, stop, page, stop_event)
            self._writable[start:stop] = np.frombuffer(data, dtype=np.uint8)
            self.stats.add(pages_fetched=1, bytes_fetched=len(data))
            if self.cache_dir:
                self._store_in_dir(page, data)
        with self._lock:
            self.present[page] = True
            self._recent[page] = None
            self._recent.move_to_end(page)
            self._evict_memory()

    # -- the cache directory -------------------------------------------------------------------
    def _page_file(self, page: int) -> str:
        return os.path.join(self.cache_dir, f"{page:09d}.page")

    def _load_from_dir(self, page: int, start: int, stop: int) -> bool:
        """Copy page ``page`` from its file if it is there and whole; False otherwise (a file of
        the wrong size, left by a crash or a bad disk, is counted and replaced by a fetch)."""
        path = self._page_file(page)
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size != stop - start:
                    self.stats.add(corrupt_cache_files=1)
                    logger.warning("%s: cached page %d is %d bytes, not %d: fetching it again",
                                   path, page, size, stop - start)
                    return False
                view = memoryview(self._map)[start:stop]
                try:
                    got = f.readinto(view)
                finally:
                    view.release()
        except FileNotFoundError:
            return False
        if got != stop - start:        # a file replaced under us is whole; a short read is not
            self.stats.add(corrupt_cache_files=1)
            return False
        try:
            os.utime(path)             # recency for the directory's LRU eviction
        except OSError:
            pass
        self.stats.add(pages_from_cache_dir=1)
        return True

    def _remove_stale_temp_files(self) -> None:
        """Delete the temporary page files that processes of this node left when they were
        killed mid-write (their pid, in the name, runs no more)."""
        from .writer import _process_alive
        for name in os.listdir(self.cache_dir):
            parts = name.split(".")
            if not name.endswith(".tmp") or len(parts) < 4 or not parts[-3].isdigit():
                continue
            if not _process_alive(int(parts[-3])):
                try:
                    os.unlink(os.path.join(self.cache_dir, name))
                except FileNotFoundError:
                    pass

    def _store_in_dir(self, page: int, data: bytes) -> None:
        """Write the page's file atomically: other processes see no file or the whole page."""
        fd, tmp = tempfile.mkstemp(dir=self.cache_dir, prefix=f".{page:09d}.",
                                   suffix=f".{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, self._page_file(page))
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        if self.cache_size is not None:
            self._evict_dir()

    def _evict_dir(self) -> None:
        """Delete the least recently used page files of this file beyond cache_size.  Another
        process reading a deleted file keeps reading it (POSIX); it only costs a refetch."""
        entries = []
        with os.scandir(self.cache_dir) as it:
            for entry in it:
                if entry.name.endswith(".page"):
                    try:
                        st = entry.stat()
                    except FileNotFoundError:
                        continue
                    entries.append((st.st_mtime, entry.name, st.st_size))
        total = sum(e[2] for e in entries)
        for _, name, size in sorted(entries):
            if total <= self.cache_size:
                break
            try:
                os.unlink(os.path.join(self.cache_dir, name))
            except FileNotFoundError:
                pass
            total -= size

    # -- memory --------------------------------------------------------------------------------
    def _evict_memory(self) -> None:
        """Drop least recently used unpinned pages from memory until under the limit (lock
        held).  MADV_DONTNEED on the private anonymous map frees the memory."""
        if self.memory_limit is None:
            return
        held_pages = len(self._recent)
        if held_pages * self.page_size <= self.memory_limit:
            return
        evictable = [p for p in self._recent if not (self.pins[p] or self.pinned_for_good[p])]
        if self.cache_dir:      # the limit is on pages no batch needs
            held_pages = len(evictable)
        held = held_pages * self.page_size
        for page in evictable:
            if held <= self.memory_limit:
                break
            start, stop = self.page_range(page)
            self._map.madvise(mmap.MADV_DONTNEED, start, stop - start)
            self.present[page] = False
            del self._recent[page]
            held -= self.page_size
            self.stats.add(evictions=1)

    def pin(self, pages: np.ndarray, delta: int) -> None:
        with self._lock:
            np.add.at(self.pins, pages, delta)
            if delta < 0:
                self._evict_memory()

    def read_bytes(self, start: int, stop: int) -> np.ndarray:
        """A copy of bytes [start, stop), fetched if needed (pinned while copied)."""
        pages = self.pages_of_range(start, stop)
        self.pin(pages, +1)
        try:
            self.fetch_pages(pages, None)
            return self.data[start:stop].copy()
        finally:
            self.pin(pages, -1)

    def fetch_all(self) -> None:
        """Fetch every page and keep them all (Loader's os_cache=False)."""
        with self._lock:
            self.memory_limit = None
            self.pinned_for_good[:] = True
        with ThreadPoolExecutor(self.settings.fetch_threads, "fastdata-fetch") as pool:
            wait_all(self.submit(np.arange(self.num_pages), None, pool), None)

    # -- samples -------------------------------------------------------------------------------
    def index_samples(self, ptrs: Sequence[np.ndarray], sizes: Sequence[np.ndarray],
                      num_samples: int) -> None:
        """Record each sample's first and last page over all its payloads (validated pointers
        and sizes, one array per field with payloads)."""
        first = np.full(num_samples, np.iinfo(np.int64).max, dtype=np.int64)
        last = np.full(num_samples, -1, dtype=np.int64)
        shift = np.uint64(self.page_size.bit_length() - 1)
        for p, s in zip(ptrs, sizes):
            has = s > 0
            lo = (p >> shift).astype(np.int64)
            hi = ((p + np.maximum(s, np.uint64(1)) - np.uint64(1)) >> shift).astype(np.int64)
            first = np.where(has, np.minimum(first, lo), first)
            last = np.where(has, np.maximum(last, hi), last)
        self._sample_pages = (first, last)

    def pages_of_samples(self, indices: np.ndarray) -> np.ndarray:
        """Every page the payloads of samples ``indices`` touch (sorted, unique)."""
        first, last = self._sample_pages
        lo, hi = first[indices], last[indices]
        has = hi >= 0
        lo, hi = lo[has], hi[has]
        pages = [lo]
        spans = hi > lo
        if spans.any():
            pages += [np.arange(a + 1, b + 1) for a, b in zip(lo[spans], hi[spans])]
        return np.unique(np.concatenate(pages))

    def pages_of_samples_field(self, ptrs: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        """Every page the payloads (uint64 pointers and sizes in bytes) of one field touch."""
        shift = np.uint64(self.page_size.bit_length() - 1)
        has = sizes > 0
        lo = (ptrs[has] >> shift).astype(np.int64)
        hi = ((ptrs[has] + sizes[has] - np.uint64(1)) >> shift).astype(np.int64)
        spans = hi > lo
        extra = [np.arange(a + 1, b + 1) for a, b in zip(lo[spans], hi[spans])]
        return np.unique(np.concatenate([lo, *extra]))

    def warn_random_order(self, batch_size: int) -> None:
        """Say once per process what order='random' over a remote file costs."""
        global _WARNED_RANDOM
        if _WARNED_RANDOM:
            return
        _WARNED_RANDOM = True
        pages = self.num_pages
        warnings.warn(
            f"{self.url}: order='random' over a remote file touches up to "
            f"{min(batch_size, pages)} of its {pages} pages of {self.page_size >> 20} MiB in every "
            f"batch of {batch_size}: the first batches wait for many whole pages, and unless "
            f"cache_size holds the whole file, pages are fetched again and again within an epoch. "
            f"Use order='quasi_random' (each batch reads a few pages), or copy the file to local "
            f"disk.", stacklevel=3)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self.data = self._writable = None
        try:
            self._map.close()
        except BufferError:
            pass      # a view is still alive; the map goes when it does


_WARNED_RANDOM = False


def wait_all(futures: Sequence[Future], *stop_events: Optional[threading.Event]) -> None:
    """Wait for every future, raising the first error; EpochStopped once a stop event is set."""
    events = [e for e in stop_events if e is not None]
    for future in futures:
        while True:
            if any(e.is_set() for e in events):
                raise EpochStopped()
            try:
                future.result(timeout=0.1)
                break
            except TimeoutError:
                continue


class PageFeed:
    """One epoch's pages: fetched ahead of the order on a pool of threads, pinned from the
    moment they are scheduled until the batch two after theirs starts (the producer finishes
    batch b - 1 while b decodes), and waited for before a batch is decoded.

    batches: the epoch's batches (sample indices) from ``first_batch`` on.  epoch_stop: the
    epoch's stop flag (close(), break): waits end when it is set; the fetches' retries end when
    the feed closes."""

    def __init__(self, pages: RemotePages, batches: Sequence[np.ndarray], first_batch: int,
                 epoch_stop: threading.Event):
        self.store, self.first_batch, self.epoch_stop = pages, first_batch, epoch_stop
        self.stop_event = threading.Event()     # set by close(): fetches stop retrying
        self.batches = batches
        self.pool = ThreadPoolExecutor(pages.settings.fetch_threads, "fastdata-fetch")
        self._cond = threading.Condition()
        self._scheduled: dict[int, tuple[np.ndarray, list[Future]]] = {}   # batch -> pins
        self._consumed = first_batch - 1       # the last batch the producer waited for
        self._closed = False
        self._error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run_ahead, name="fastdata-prefetch",
                                       daemon=True)
        self.thread.start()

    def _schedule(self, number: int, indices: np.ndarray) -> list[Future]:
        """Pin the pages of batch ``number``'s samples and start fetching the missing ones."""
        pages = self.store.pages_of_samples(np.asarray(indices, dtype=np.int64))
        self.store.pin(pages, +1)
        futures = self.store.submit(pages, self.stop_event, self.pool)
        with self._cond:
            old = self._scheduled.get(number)
            if old is not None:     # replacements (on_error="skip"): keep both sets pinned
                pages = np.concatenate([old[0], pages])
            self._scheduled[number] = (pages, futures)
        return futures

    def _ahead_pages(self) -> int:
        return sum(len(p) for b, (p, _) in self._scheduled.items() if b > self._consumed)

    def _run_ahead(self) -> None:
        """Schedule batch after batch while the pages scheduled ahead of the consumer stay
        within ahead_pages (always at least the next batch)."""
        limit = self.store.settings.ahead_pages
        try:
            for k, indices in enumerate(self.batches):
                number = self.first_batch + k
                with self._cond:
                    while not self._closed and number > self._consumed + 1 and \
                            self._ahead_pages() >= limit:
                        self._cond.wait(0.1)
                    if self._closed:
                        return
                    if number in self._scheduled or number <= self._consumed:
                        continue
                self._schedule(number, indices)
        except BaseException as err:   # surfaces in ensure(); the epoch's waits see it
            with self._cond:
                self._error = err
                self._cond.notify_all()

    def ensure(self, number: int, indices: np.ndarray) -> None:
        """Block until every page batch ``number``'s samples touch is present (fetching what
        is not scheduled, e.g. replacement samples); raise a fetch's RemotePageError."""
        with self._cond:
            if self._error is not None and not isinstance(self._error, EpochStopped):
                raise self._error
            scheduled = self._scheduled.get(number)
        if scheduled is None or not np.isin(
                self.store.pages_of_samples(np.asarray(indices, dtype=np.int64)),
                scheduled[0]).all():
            futures = self._schedule(number, indices)
        else:
            futures = scheduled[1]
        wait_all(futures, self.stop_event, self.epoch_stop)
        with self._cond:
            self._consumed = max(self._consumed, number)
            done = [b for b in self._scheduled if b < self._consumed - 1]
            released = [self._scheduled.pop(b)[0] for b in done]
            self._cond.notify_all()
        for pages in released:
            self.store.pin(pages, -1)

    def close(self) -> None:
        """Stop prefetching, wait for the fetch threads (each call has a timeout), unpin."""
        self.stop_event.set()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self.thread.join()
        self.pool.shutdown(wait=True, cancel_futures=True)
        with self._cond:
            scheduled, self._scheduled = self._scheduled, {}
        stopped = EpochStopped()
        for pages, futures in scheduled.values():
            self.store.abandon(futures, stopped)
            self.store.pin(pages, -1)
