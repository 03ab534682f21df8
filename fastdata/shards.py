"""Shard sets: which records shard K of N holds, how shard files are ordered, and reading many
``.beton`` files as one dataset.

A shard set is several ``.beton`` files with the same fields and page size whose records, one file
after the other, form one dataset with one index space (shard 0's records first).
``ShardedReader`` opens them as one: each file is opened and validated by ``Reader`` (the same
checks as for one file), then the files are memory-mapped back to back into one reserved range of
addresses, each at an offset that is a multiple of the page size, so ``data`` is one uint8 array
over all of them; the metadata, pointer, size and side tables are concatenated, with every pointer
moved by its file's offset.  Every kernel that reads ``reader.data`` at a reader's pointers
therefore works unchanged, and no sample is copied to be read.

Because each file starts on a page boundary of the combined range, a sample's page is its page in
its own file, numbered after the earlier files' pages: the quasi-random order (which groups by page)
of a shard set is that of the file ``fastdata merge`` makes from it, which copies the pages as
they are.  Sequential and random orders depend only on the number of records, so they are those of
any one file holding the same records, however its pages are laid out.
"""
from __future__ import annotations

import ctypes
import glob
import mmap
import os
import re
import sys
import weakref
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Type, Union

import numpy as np

from . import format as fmt
from .fields import Field, RegionTable
from .format import FormatError
from .reader import Reader

PathLike = Union[str, os.PathLike]
ShardSpec = Union[PathLike, Sequence[PathLike]]

# ``<stem>-<K>-of-<N><ext>``, e.g. train-0-of-4.beton
SHARD_NAME = re.compile(r"^(?P<stem>.*)-(?P<k>[0-9]+)-of-(?P<n>[0-9]+)(?P<ext>\.[^.]*)?$")
_GLOB_CHARS = ("*", "?", "[")


def shard_range(num_samples: int, shard: int, num_shards: int) -> range:
    """The records that shard ``shard`` of ``num_shards`` holds: a contiguous range of
    ``range(num_samples)``; shard k gets [k * n // N, (k + 1) * n // N), so sizes differ by at
    most one.  ValueError for a shard outside [0, N) or an empty shard."""
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise ValueError(f"shard {shard}/{num_shards}: need 0 <= K < N and N >= 1")
    records = range(shard * num_samples // num_shards, (shard + 1) * num_samples // num_shards)
    if not records:
        raise ValueError(f"shard {shard}/{num_shards} of {num_samples} records is empty: use at "
                         f"most {num_samples} shards")
    return records


def parse_shard(spec: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N); ValueError naming the spec if it is not two integers 0 <= K < N."""
    match = re.fullmatch(r"\s*([0-9]+)\s*/\s*([0-9]+)\s*", spec)
    if not match:
        raise ValueError(f"shard {spec!r} must be K/N, e.g. 0/4")
    k, n = int(match.group(1)), int(match.group(2))
    if not 0 <= k < n:
        raise ValueError(f"shard {spec!r}: K must be in [0, N)")
    return k, n


def is_shard_set(path_or_paths: object) -> bool:
    """Whether ``path_or_paths`` names several files: a list or tuple of paths, or a string
    with a glob wildcard (``*``, ``?``, ``[``) that is not itself an existing file's name."""
    if isinstance(path_or_paths, (list, tuple)):
        return True
    if isinstance(path_or_paths, (str, os.PathLike)):
        path = os.fspath(path_or_paths)
        return isinstance(path, str) and any(c in path for c in _GLOB_CHARS) \
            and not os.path.exists(path)
    return False


def shard_paths(path_or_paths: ShardSpec) -> list[str]:
    """The files of a shard set, in shard order.

    ``path_or_paths``: a glob pattern (expanded, sorted by name) or a list/tuple of paths (kept in
    the order given).  When every file name has the form ``<stem>-<K>-of-<N><ext>`` the files are
    put in K order whatever order they came in (so a shell's ``train-10-of-12`` before
    ``train-2-of-12`` does not matter), and they must be exactly shards 0..N-1 of one set:
    ValueError naming the file for a different N or stem, a duplicate K, or a missing K.
    FileNotFoundError if a glob matches nothing."""
    if isinstance(path_or_paths, (list, tuple)):
        paths = [os.fspath(p) for p in path_or_paths]
        if not paths:
            raise ValueError("no shard files given")
    else:
        pattern = os.fspath(path_or_paths)
        paths = sorted(glob.glob(pattern))
        if not paths:
            raise FileNotFoundError(f"{pattern}: no file matches")
    seen: dict[str, str] = {}
    for p in paths:
        real = os.path.realpath(p)
        if real in seen:
            raise ValueError(f"{p}: given twice (also as {seen[real]})")
        seen[real] = p
    return _in_shard_order(paths)


def _in_shard_order(paths: list[str]) -> list[str]:
    names = [SHARD_NAME.match(os.path.basename(p)) for p in paths]
    if not all(names):
        return paths
    first, first_path = names[0], paths[0]
    count = int(first["n"])
    by_k: dict[int, str] = {}
    for path, name in zip(paths, names):
        if (name["stem"], name["ext"]) != (first["stem"], first["ext"]):
            raise ValueError(f"{path}: not of the same shard set as {first_path}")
        if int(name["n"]) != count:
            raise ValueError(f"{path}: a shard of {int(name['n'])} where {first_path} is a shard "
                             f"of {count}")
        k = int(name["k"])
        if k >= count:
            raise ValueError(f"{path}: shard {k} of {count} is out of range")
        if k in by_k:
            raise ValueError(f"{path}: shard {k} of {count} again (also {by_k[k]})")
        by_k[k] = path
    missing = [k for k in range(count) if k not in by_k]
    if missing:
        stem = os.path.join(os.path.dirname(first_path), first["stem"])
        raise ValueError(f"{stem}-K-of-{count}{first['ext'] or ''}: shard {missing[0]} of {count} "
                         f"is missing ({len(missing)} missing; found {sorted(by_k)})")
    return [by_k[k] for k in range(count)]


def _identity(st: os.stat_result) -> tuple:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


@dataclass
class Shard:
    """One file of a ShardedReader.  Offsets are in bytes; ``offset`` is where the file starts
    in the combined ``data`` (a multiple of the page size); ``data_start``/``data_end`` bound its
    data pages inside the file; records ``first_sample`` .. ``first_sample + num_samples - 1`` of
    the set are its records 0 .. num_samples - 1; its allocation entries are rows
    ``alloc_rows`` of the combined table."""
    path: str
    file_size: int
    offset: int
    first_sample: int
    num_samples: int
    data_start: int
    data_end: int
    alloc_rows: range


@dataclass
class _ShardTables:
    """What Reader validated in one file, copied out of its map."""
    path: str
    identity: tuple
    file_size: int
    num_samples: int
    page_size: int
    data_start: int
    data_end: int
    fields: dict
    descriptors: np.ndarray
    metadata: np.ndarray
    ptrs: dict
    sizes: dict
    side_tables: dict
    alloc_table: np.ndarray

    @classmethod
    def read(cls, path: str, custom_fields, accept_jpeg_warnings: bool) -> "_ShardTables":
        before = _identity(os.stat(path))
        with Reader(path, custom_fields, accept_jpeg_warnings) as reader:
            num_fields = len(reader.fields)
            start = fmt.data_start(num_fields, reader.num_samples,
                                   reader.metadata_dtype.itemsize, reader.page_size)
            copy = lambda a: None if a is None else np.array(a)  # noqa: E731
            return cls(path, before, reader.file_size, reader.num_samples, reader.page_size,
                       start, max(start, reader.alloc_table_ptr), reader.fields,
                       reader.data[fmt.HEADER_SIZE:fmt.metadata_start(num_fields)]
                       .view(fmt.FIELD_DESC_DTYPE).copy(),
                       reader.metadata.copy(),
                       {n: copy(reader.payload_ptrs(n)) for n in reader.field_names},
                       {n: copy(reader.payload_sizes(n)) for n in reader.field_names},
                       {n: copy(reader.side_table(n)) for n in reader.field_names},
                       reader.alloc_table.copy())


def _settings(field: Field, descriptor: np.void) -> bytes:
    """A field's argument bytes without where its side table is (which differs per file)."""
    if field.side_table_location is not None:
        return field.to_arguments(None).tobytes()
    return bytes(descriptor["arguments"])


def _check_same_layout(shards: list[_ShardTables]) -> None:
    """FormatError naming the file whose fields or page size differ from the first file's."""
    first = shards[0]
    names = list(first.fields)
    for s in shards[1:]:
        if s.page_size != first.page_size:
            raise FormatError(f"{s.path}: page size {s.page_size} differs from {first.path}'s "
                              f"{first.page_size}")
        if list(s.fields) != names:
            raise FormatError(f"{s.path}: fields {list(s.fields)} differ from {first.path}'s "
                              f"{names}")
        for k, name in enumerate(names):
            a, b = first.fields[name], s.fields[name]
            da, db = first.descriptors[k], s.descriptors[k]
            if type(a) is not type(b) or int(da["type_id"]) != int(db["type_id"]):
                raise FormatError(f"{s.path}: field {name!r} is a {type(b).__name__} (type id "
                                  f"{int(db['type_id'])}), in {first.path} a {type(a).__name__} "
                                  f"(type id {int(da['type_id'])})")
            if (first.side_tables[name] is None) != (s.side_tables[name] is None):
                has, lacks = (first, s) if s.side_tables[name] is None else (s, first)
                raise FormatError(f"{lacks.path}: field {name!r} has no side table where "
                                  f"{has.path} has one (written by different writers?)")
            if _settings(a, da) != _settings(b, db):
                raise FormatError(f"{s.path}: field {name!r} has other settings than in "
                                  f"{first.path}: {b.describe()} vs {a.describe()}")


def shift_pointers(metadata: np.ndarray, fields: Mapping[str, Field],
                   ranges: Sequence[range], deltas: Sequence[int]) -> None:
    """Add ``deltas[j]`` to every payload pointer of records ``ranges[j]`` of ``metadata`` (a
    writable metadata table, records named f0, f1, ... in field order), in place."""
    for k, (name, field) in enumerate(fields.items()):
        column = metadata[f"f{k}"]
        ptrs = field.payload_ptrs(column)
        if ptrs is None:
            continue
        if not np.shares_memory(ptrs, metadata):
            raise TypeError(f"field {name!r} ({type(field).__name__}): payload_ptrs must return "
                            f"a view of the metadata column to be moved")
        for records, delta in zip(ranges, deltas):
            # modulo 2**64: a negative delta moves pointers down
            ptrs[records.start:records.stop] += np.uint64(delta & 0xFFFFFFFFFFFFFFFF)


# -- one address range over several files --------------------------------------------------------
if sys.platform.startswith("linux"):
    _MAP_FIXED, _MAP_NORESERVE = 0x10, 0x4000
elif sys.platform == "darwin":
    _MAP_FIXED, _MAP_NORESERVE = 0x10, 0x40
else:
    _MAP_FIXED = _MAP_NORESERVE = None
_PROT_NONE = 0


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_int64]
    libc.munmap.restype = ctypes.c_int
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    return libc


def _check_mapped(result: Optional[int], what: str) -> int:
    if result is None or result == ctypes.c_void_p(-1).value:
        err = ctypes.get_errno()
        raise OSError(err, f"mmap of {what} failed: {os.strerror(err)}")
    return result


class _AddressRange:
    """A reserved range of addresses with files mapped into it, seen by numpy as one read-only
    uint8 array (``np.asarray(range)``: the array keeps this object, hence the mapping, alive; it
    is unmapped when the last view of it is gone)."""

    def __init__(self, size: int):
        if _MAP_FIXED is None:
            raise OSError(f"reading several .beton files as one needs mmap with MAP_FIXED "
                          f"(Linux or macOS); not available on {sys.platform}")
        self.libc, self.size = _libc(), size
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_NORESERVE
        self.address = _check_mapped(self.libc.mmap(None, size, _PROT_NONE, flags, -1, 0),
                                     f"a {size}-byte reservation")
        self._unmap = weakref.finalize(self, self.libc.munmap, self.address, size)
        self.__array_interface__ = {"shape": (size,), "typestr": "|u1", "version": 3,
                                    "data": (self.address, True)}

    def map_file(self, fd: int, offset: int, length: int, path: str) -> None:
        """Map ``length`` bytes of open file ``fd`` read-only at ``offset`` in the range."""
        got = _check_mapped(self.libc.mmap(self.address + offset, length, mmap.PROT_READ,
                                           mmap.MAP_SHARED | _MAP_FIXED, fd, 0), path)
        if got != self.address + offset:
            raise OSError(f"mmap of {path} landed at {got:#x}, not {self.address + offset:#x}")

    def release(self) -> None:
        self._unmap()


class ShardedReader(Reader):
    """Random access to the records of several ``.beton`` files (a shard set) as one dataset:
    ``len()`` is the sum of the files' records, index i is record i - first of the file holding
    it (files in ``shard_paths`` order).  The whole Reader interface works (``read``,
    ``payload``, ``column``, ``payload_ptrs``, ``image_sizes``, ``data``, ``load_into_memory``);
    ``Reader(list_or_glob)`` returns one.

    ``path``: the glob pattern, or the files joined by " + ".  ``paths``: the files in order.
    ``shards``: each file's place (Shard records).  ``file_size``: the files' total bytes.
    FormatError naming the file if one is corrupt (Reader's checks, per file) or its fields or
    page size differ from the first file's; ValueError for a bad shard set (see shard_paths).
    """

    def __init__(self, path_or_paths: ShardSpec,
                 custom_fields: Optional[Mapping[str, Type[Field]]] = None,
                 accept_jpeg_warnings: bool = False, *,
                 storage_options: Optional[Mapping[str, Any]] = None,
                 cache_dir: Any = None, cache_size: Optional[int] = None,
                 remote_settings: Any = None):
        self._mmap = None        # Reader.close() checks it; the files are held by self.data
        self.remote = None       # local files only (the remote options are for one URL)
        self.paths = shard_paths(path_or_paths)
        urls = [p for p in self.paths if "://" in p]
        if urls:
            raise ValueError(f"{urls[0]}: a shard set is read from local files only; "
                             f"`fastdata merge` the shards into one file to read it by URL")
        self.path = os.fspath(path_or_paths) if isinstance(path_or_paths, (str, os.PathLike)) \
            else " + ".join(self.paths)
        tables = [_ShardTables.read(p, custom_fields, accept_jpeg_warnings) for p in self.paths]
        _check_same_layout(tables)
        first = tables[0]
        self.page_size = first.page_size
        self.fields: dict[str, Field] = first.fields
        self.field_names = list(self.fields)
        self.metadata_dtype = first.metadata.dtype
        self.descriptors = first.descriptors
        self.num_samples = sum(t.num_samples for t in tables)
        self.file_size = sum(t.file_size for t in tables)

        self.shards: list[Shard] = []
        offset = sample = row = 0
        for t in tables:
            self.shards.append(Shard(t.path, t.file_size, offset, sample, t.num_samples,
                                     t.data_start, t.data_end,
                                     range(row, row + len(t.alloc_table))))
            offset = fmt.align_up(offset + t.file_size, self.page_size)
            sample += t.num_samples
            row += len(t.alloc_table)
        self._combined_size = offset
        offsets = [s.offset for s in self.shards]

        self.metadata = np.concatenate([t.metadata for t in tables])
        shift_pointers(self.metadata, self.fields,
                       [range(s.first_sample, s.first_sample + s.num_samples)
                        for s in self.shards], offsets)
        self.metadata.flags.writeable = False
        self._ptrs = {n: self._joined([t.ptrs[n] for t in tables], offsets)
                      for n in self.field_names}
        self._sizes = {n: self._joined([t.sizes[n] for t in tables]) for n in self.field_names}
        self._side_tables = {n: self._joined([t.side_tables[n] for t in tables])
                             for n in self.field_names}
        alloc = np.concatenate([t.alloc_table for t in tables])
        for s in self.shards:
            rows = alloc[s.alloc_rows.start:s.alloc_rows.stop]
            rows["ptr"] += np.uint64(s.offset)
            of_sample = rows["sample_id"] != fmt.NO_SAMPLE_ID
            rows["sample_id"][of_sample] += np.uint64(s.first_sample)
        self.alloc_table = alloc
        self.regions = RegionTable(alloc["ptr"], alloc["size"])
        self.data = self._map(tables)

    @staticmethod
    def _joined(parts: list, offsets: Optional[list[int]] = None) -> Optional[np.ndarray]:
        if parts[0] is None:
            return None
        if offsets is not None:
            parts = [p + np.asarray(o, dtype=p.dtype) for p, o in zip(parts, offsets)]
        return np.concatenate(parts)

    def _map(self, tables: list[_ShardTables]) -> np.ndarray:
        """The files mapped back to back at their shards' offsets, as one read-only array."""
        address_range = _AddressRange(self._combined_size)
        try:
            for t, s in zip(tables, self.shards):
                fd = os.open(t.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
                try:
                    self._check_unchanged(t, os.fstat(fd))
                    address_range.map_file(fd, s.offset, t.file_size, t.path)
                finally:
                    os.close(fd)
        except BaseException:
            address_range.release()
            raise
        return np.asarray(address_range)

    @staticmethod
    def _check_unchanged(t: _ShardTables, st: os.stat_result) -> None:
        if _identity(st) != t.identity:
            raise FormatError(f"{t.path}: the file changed while it was being opened")

    def load_into_memory(self) -> None:
        """Read every file into one array in process memory (at the same offsets) and drop the
        memory maps; needs RAM for all the files."""
        data = np.zeros(self._combined_size, dtype=np.uint8)
        for s in self.shards:
            with open(s.path, "rb", buffering=0) as f:
                if os.fstat(f.fileno()).st_size != s.file_size:
                    raise FormatError(f"{s.path}: the file changed size while open")
                view = memoryview(data)[s.offset:s.offset + s.file_size]
                while view:
                    n = f.readinto(view)
                    if not n:
                        raise FormatError(f"{s.path}: the file changed size while open")
                    view = view[n:]
        data.flags.writeable = False
        self.data = data

    def shard_of(self, index: int) -> tuple[Shard, int]:
        """The file holding record ``index`` of the set and the record's index in that file."""
        i = self._index(index)
        k = int(np.searchsorted([s.first_sample for s in self.shards], i, side="right")) - 1
        return self.shards[k], i - self.shards[k].first_sample
