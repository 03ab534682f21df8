"""Opening a ``.beton`` file: validate everything once, memory-map it, read any sample's fields.

Every number that comes off disk (header, descriptors, arguments, metadata pointers and sizes,
allocation table) is checked against the file size and against each other here, at open, so the
per-sample path can trust them: no file content can make a later read go out of bounds.
"""
from __future__ import annotations

import mmap
import os
from typing import Any, Mapping, Optional, Type

import numpy as np

from . import format as fmt
from .fields import CUSTOM_TYPE_ID, TYPE_IDS, Field, RegionTable
from .format import FormatError


class SampleError(RuntimeError):
    """A stored value that could not be decoded; names the sample index and field."""

    def __init__(self, index: int, field: str, reason: str):
        super().__init__(f"sample {index}, field {field!r}: {reason}")
        self.index, self.field, self.reason = index, field, reason


class Reader:
    """Random access to the samples of a ``.beton`` file (written by fastdata or by FFCV).

    ``reader[i]`` is a tuple of field values in file order; ``reader.read(i, name)`` one value.
    Images come back as H x W x 3 uint8 arrays, ints/floats as Python numbers, bytes as bytes,
    JSON as the parsed object, arrays and tensors as numpy arrays.

    ``custom_fields`` maps a field name to its class for fields stored with FFCV's custom type
    id 255.  Raises FormatError (naming what is wrong) for a truncated or corrupt file.
    """

    def __init__(self, path: str | os.PathLike, custom_fields: Optional[Mapping[str, Type[Field]]]
                 = None):
        self.path = os.fspath(path)
        custom_fields = dict(custom_fields or {})
        with open(self.path, "rb") as f:
            self.file_size = os.fstat(f.fileno()).st_size
            if self.file_size < fmt.HEADER_SIZE:
                raise FormatError(f"{self.path}: {self.file_size} bytes is too short for a header")
            self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            self._open(custom_fields)
        except FormatError as err:
            self.close()
            raise FormatError(f"{self.path}: {err}") from None

    def _open(self, custom_fields: Mapping[str, Type[Field]]) -> None:
        self.data = np.frombuffer(self._mmap, dtype=np.uint8)
        header = self.data[:fmt.HEADER_SIZE].view(fmt.HEADER_DTYPE)[0]
        if int(header["version"]) != fmt.VERSION:
            raise FormatError(f"format version {int(header['version'])} is not {fmt.VERSION} "
                              f"(not a .beton file, or a corrupt header)")
        self.page_size = int(header["page_size"])
        fmt.check_page_size(self.page_size)
        self.num_samples = int(header["num_samples"])
        num_fields = int(header["num_fields"])
        if num_fields == 0:
            raise FormatError("the header declares no fields")
        self.alloc_table_ptr = int(header["alloc_table_ptr"])

        meta_start = fmt.metadata_start(num_fields)
        if meta_start > self.file_size:
            raise FormatError(f"{num_fields} field descriptors run past the end of the file")
        descriptors = self.data[fmt.HEADER_SIZE:meta_start].view(fmt.FIELD_DESC_DTYPE)
        self.fields: dict[str, Field] = {}
        for k, desc in enumerate(descriptors):
            name = fmt.decode_name(desc["name"])
            if name in self.fields:
                raise FormatError(f"field name {name!r} appears twice")
            type_id = int(desc["type_id"])
            if name in custom_fields:
                cls = custom_fields[name]
            elif type_id in TYPE_IDS:
                cls = TYPE_IDS[type_id]
            elif type_id == CUSTOM_TYPE_ID:
                raise FormatError(f"field {name!r} has a custom type: pass its class in "
                                  f"custom_fields={{{name!r}: ...}}")
            else:
                raise FormatError(f"field {name!r} has unknown type id {type_id} (written by a "
                                  f"newer fastdata?)")
            self.fields[name] = cls.from_arguments(np.array(desc["arguments"]))
        self.field_names = list(self.fields)

        self.metadata_dtype = fmt.metadata_dtype([f.metadata_dtype for f in self.fields.values()])
        meta_end = meta_start + self.num_samples * self.metadata_dtype.itemsize
        if meta_end > self.file_size or self.num_samples > self.file_size:
            raise FormatError(f"metadata for {self.num_samples} samples runs past the end of the "
                              f"file ({self.file_size} bytes): truncated file?")
        if not meta_end <= self.alloc_table_ptr <= self.file_size:
            raise FormatError(f"allocation table pointer {self.alloc_table_ptr} is outside "
                              f"[{meta_end}, {self.file_size}]: truncated file?")
        if (self.file_size - self.alloc_table_ptr) % fmt.ALLOC_ENTRY_DTYPE.itemsize:
            raise FormatError("allocation table is not a whole number of entries: truncated file?")
        self.metadata = self.data[meta_start:meta_end].view(self.metadata_dtype)
        self.alloc_table = self.data[self.alloc_table_ptr:].view(fmt.ALLOC_ENTRY_DTYPE)
        self._check_alloc_table(meta_end)
        self.regions = RegionTable(self.alloc_table["ptr"], self.alloc_table["size"])

        # Per field: validated payload pointers and sizes, and the side table if any.
        self._ptrs: dict[str, Optional[np.ndarray]] = {}
        self._sizes: dict[str, Optional[np.ndarray]] = {}
        self._side_tables: dict[str, Optional[np.ndarray]] = {}
        for k, (name, field) in enumerate(self.fields.items()):
            column = self.metadata[f"f{k}"]
            sizes = field.payload_sizes(column, self.regions, name)
            ptrs = field.payload_ptrs(column)
            # Copies, not views of the map: they outlive it (load_into_memory, close).
            self._sizes[name] = None if sizes is None else np.array(sizes, dtype=np.uint64)
            self._ptrs[name] = None if ptrs is None else np.array(ptrs, dtype=np.uint64)
            self._side_tables[name] = self._read_side_table(name, field)

    def _check_alloc_table(self, data_floor: int) -> None:
        table = self.alloc_table
        ptrs, sizes, ids = table["ptr"], table["size"], table["sample_id"]
        # FFCV may record an empty value before the first page (ptr = data_start - page_size):
        # a zero-size region reads nothing, wherever it points.
        bad = ((ptrs < data_floor) & (sizes > 0)) | (ptrs > self.alloc_table_ptr) | \
              (sizes > np.uint64(self.alloc_table_ptr) - np.minimum(ptrs, self.alloc_table_ptr))
        bad |= (ids >= self.num_samples) & (ids != fmt.NO_SAMPLE_ID)
        if bad.any():
            k = int(np.argmax(bad))
            raise FormatError(f"allocation entry {k} (sample {int(ids[k])}, ptr {int(ptrs[k])}, "
                              f"size {int(sizes[k])}) points outside the data pages")
        order = np.argsort(ptrs, kind="stable")
        p, s = ptrs[order], sizes[order]
        overlap = (p[:-1] + s[:-1] > p[1:]) & (s[:-1] > 0)
        if overlap.any():
            k = int(order[int(np.argmax(overlap))])
            raise FormatError(f"allocation entry {k} overlaps the next region")

    def _read_side_table(self, name: str, field: Field) -> Optional[np.ndarray]:
        location = field.side_table_location
        if location is None or field.side_table_dtype is None:
            return None
        ptr, count = location
        nbytes = count * field.side_table_dtype.itemsize
        if count != self.num_samples:
            raise FormatError(f"field {name!r}: side table has {count} entries for "
                              f"{self.num_samples} samples")
        starts = np.searchsorted(self.regions.ptrs, ptr)
        if starts >= len(self.regions.ptrs) or int(self.regions.ptrs[starts]) != ptr \
                or int(self.regions.sizes[starts]) < nbytes:
            raise FormatError(f"field {name!r}: side table pointer {ptr} is not the start of an "
                              f"allocated region of {nbytes} bytes")
        return self.data[ptr:ptr + nbytes].view(field.side_table_dtype)

    def load_into_memory(self) -> None:
        """Copy the whole file into process memory and drop the memory map (for files that
        should not depend on the page cache; needs RAM for the whole file)."""
        data = np.fromfile(self.path, dtype=np.uint8)
        if len(data) != self.file_size:
            raise FormatError(f"{self.path}: the file changed size while open")
        offset = lambda view: view.ctypes.data - self.data.ctypes.data  # noqa: E731
        meta_start = offset(self.metadata)
        self.metadata = data[meta_start:meta_start + self.metadata.nbytes].view(
            self.metadata_dtype)
        self.alloc_table = data[self.alloc_table_ptr:].view(fmt.ALLOC_ENTRY_DTYPE)
        for name, table in self._side_tables.items():
            if table is not None:
                start = offset(table)
                self._side_tables[name] = data[start:start + table.nbytes].view(table.dtype)
        self.data = data
        self._mmap.close()
        self._mmap = None

    # -- access ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.num_samples

    def _index(self, index: int) -> int:
        i = int(index)
        if i < 0:
            i += self.num_samples
        if not 0 <= i < self.num_samples:
            raise IndexError(f"sample {index} is out of range for {self.num_samples} samples")
        return i

    def payload(self, index: int, name: str) -> Optional[np.ndarray]:
        """The stored bytes of one value (a read-only view into the file), or None."""
        i = self._index(index)
        ptrs = self._ptrs[name]
        if ptrs is None:
            return None
        start = int(ptrs[i])
        return self.data[start:start + int(self._sizes[name][i])]

    def payload_ptrs(self, name: str) -> Optional[np.ndarray]:
        """Every sample's validated payload pointer for field ``name`` (uint64[N]), or None."""
        return self._ptrs[name]

    def payload_sizes(self, name: str) -> Optional[np.ndarray]:
        """Every sample's validated payload size in bytes for field ``name``, or None."""
        return self._sizes[name]

    def side_table(self, name: str) -> Optional[np.ndarray]:
        """The field's per-sample side table (for images: original width and height), or None."""
        return self._side_tables[name]

    def original_size(self, index: int, name: str) -> tuple[int, int]:
        """(width, height) of an image before ``max_resolution``; the stored size if unknown."""
        i = self._index(index)
        table = self._side_tables[name]
        if table is not None:
            return int(table[i]["width"]), int(table[i]["height"])
        k = self.field_names.index(name)
        record = self.metadata[i][f"f{k}"]
        return int(record["width"]), int(record["height"])

    def read(self, index: int, name: str) -> Any:
        """The decoded value of field ``name`` of sample ``index``; SampleError if it is bad."""
        i = self._index(index)
        k = self.field_names.index(name)
        field = self.fields[name]
        side = self._side_tables[name]
        try:
            return field.decode(self.metadata[i][f"f{k}"], self.payload(i, name),
                                None if side is None else side[i])
        except (ValueError, TypeError) as err:
            raise SampleError(i, name, str(err)) from None

    def __getitem__(self, index: int) -> tuple:
        return tuple(self.read(index, name) for name in self.field_names)

    def close(self) -> None:
        """Release the memory map (values read earlier stay valid: they are copies).  A view of
        the file still alive (from ``payload()``, ``side_table()``, ``metadata``) keeps it mapped
        until that view is dropped."""
        self.data = self.metadata = self.alloc_table = None
        self._side_tables = {}
        if getattr(self, "_mmap", None) is not None:
            try:
                self._mmap.close()
            except BufferError:
                pass   # a view is still alive; the map goes when it does
            self._mmap = None

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
