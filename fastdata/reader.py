"""Opening a ``.beton`` file: validate everything once, memory-map it, read any sample's fields.

Every number that comes off disk (header, descriptors, arguments, metadata pointers and sizes,
allocation table) is checked against the file size and against each other here, at open, so the
per-sample path can trust them: no file content can make a later read go out of bounds.
"""
from __future__ import annotations

import mmap
import os
from typing import TYPE_CHECKING, Any, Mapping, NamedTuple, Optional, Sequence, Type

import numpy as np

from . import format as fmt
from .fields import CUSTOM_TYPE_ID, TYPE_IDS, Field, RegionTable, RGBImageField
from .format import FormatError

if TYPE_CHECKING:
    from .remote import RemoteSettings


class SampleError(RuntimeError):
    """A stored value that could not be decoded; names the sample index and field."""

    def __init__(self, index: int, field: str, reason: str):
        super().__init__(f"sample {index}, field {field!r}: {reason}")
        self.index, self.field, self.reason = index, field, reason


def check_regions_match_values(alloc_table: np.ndarray,
                               values: Sequence[tuple[str, np.ndarray, np.ndarray]],
                               num_samples: int, side_table_ptrs: Sequence[int] = ()) -> None:
    """FormatError unless the allocation table's regions and the stored values match one to one.

    Each value (sample i, field) with a payload must be exactly one region: the one that starts at
    its pointer, of its size, whose sample id in the table is i.  Each region must be exactly one
    such value, or one field's side table (sample id NO_SAMPLE_ID).  This catches a pointer moved
    onto another sample's region, two values sharing a region, and regions no value refers to (for
    example after a corrupt field type id, which makes later fields read the wrong metadata bytes).

    alloc_table: ALLOC_ENTRY_DTYPE[E], already checked to lie inside the file.
    values: (field name, pointers uint64[num_samples], sizes uint64[num_samples] in bytes) per
      field with payloads, in field order.
    side_table_ptrs: where each field's side table starts.
    Cost: one argsort of the table and one of the pointers (each cheap on the nearly sorted
    arrays writers produce), a few elementwise passes; no Python loop over samples.
    """
    ids, ptrs, sizes = alloc_table["sample_id"], alloc_table["ptr"], alloc_table["size"]
    of_sample = ids != fmt.NO_SAMPLE_ID
    region_rows = (ids[of_sample], ptrs[of_sample], sizes[of_sample])
    value_rows = (np.tile(np.arange(num_samples, dtype=np.uint64), len(values)),
                  np.concatenate([np.asarray(v[1], np.uint64) for v in values] or
                                 [np.zeros(0, np.uint64)]),
                  np.concatenate([np.asarray(v[2], np.uint64) for v in values] or
                                 [np.zeros(0, np.uint64)]))
    matched = False
    if len(region_rows[0]) == len(value_rows[0]):
        region_order, value_order = _row_order(*region_rows), _row_order(*value_rows)
        matched = all(np.array_equal(r[region_order], v[value_order])
                      for r, v in zip(region_rows, value_rows))
    if not matched:
        raise FormatError(_first_mismatch(alloc_table, np.flatnonzero(of_sample), region_rows,
                                          value_rows, [v[0] for v in values], num_samples))
    # Side tables: each is one region of its own, recorded with no sample id.
    side_entries = np.flatnonzero(~of_sample)
    side_table_starts = sorted(int(p) for p in side_table_ptrs)
    if sorted(int(p) for p in ptrs[side_entries]) != side_table_starts:
        for k in side_entries:
            if int(ptrs[k]) not in side_table_starts:
                raise FormatError(f"allocation entry {k} (ptr {int(ptrs[k])}, {int(sizes[k])} "
                                  f"bytes) belongs to no sample and is no field's side table")
        raise FormatError(f"the side tables at {side_table_starts} are not each one region "
                          f"recorded for no sample")


def _row_order(ids: np.ndarray, ptrs: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """The order sorting rows by (ptr, size, sample id).  Pointers are unique in a sound file
    except for FFCV's empty values (a zero-size region at the next region's pointer), so sorting by
    pointer alone is usually enough and is cheap on the nearly sorted arrays writers produce."""
    order = np.argsort(ptrs, kind="stable")
    sorted_ptrs = ptrs[order]
    if (sorted_ptrs[1:] == sorted_ptrs[:-1]).any():
        order = np.lexsort((ids, sizes, ptrs))
    return order


def _first_mismatch(alloc_table: np.ndarray, entry_of_region: np.ndarray,
                    region_rows: tuple, value_rows: tuple, names: list[str],
                    num_samples: int) -> str:
    """What is wrong, for check_regions_match_values: the value of the lowest sample that has no
    region of its own, else two values sharing one region, else a region no value refers to."""
    num_regions = len(region_rows[0])
    ids, ptrs, sizes = (np.concatenate([r, v]) for r, v in zip(region_rows, value_rows))
    is_value = np.arange(len(ids)) >= num_regions
    order = np.lexsort((is_value, ids, sizes, ptrs))
    key_changes = [(a[order][1:] != a[order][:-1]) for a in (ids, ptrs, sizes)]
    group = np.cumsum(np.concatenate([[True], np.logical_or.reduce(key_changes)])) - 1
    group_of = np.empty(len(ids), dtype=np.int64)
    group_of[order] = group
    values_in = np.bincount(group_of, weights=is_value).astype(np.int64)
    regions_in = np.bincount(group_of, weights=~is_value).astype(np.int64)

    def sample_field(row: int) -> tuple[int, str]:
        flat = row - num_regions
        return flat % num_samples, names[flat // num_samples]

    def first_value(mask: np.ndarray) -> int:
        # rows are field-major; the lowest sample (then the first field) is reported
        rows = np.flatnonzero(mask & is_value)
        flat = rows - num_regions
        return int(rows[np.lexsort((flat // num_samples, flat % num_samples))[0]])

    unmatched = regions_in[group_of] == 0
    if (unmatched & is_value).any():
        row = first_value(unmatched)
        i, name = sample_field(row)
        ptr, size = int(ptrs[row]), int(sizes[row])
        at = np.flatnonzero(alloc_table["ptr"] == ptr)
        owners = [int(s) for s in alloc_table["sample_id"][at]]
        if i not in owners:
            owner = "no sample (a side table)" if owners and owners[0] == int(fmt.NO_SAMPLE_ID) \
                else f"sample {owners[0]}" if owners else "no region"
            return (f"sample {i}, field {name!r}: data pointer {ptr} is the start of a region "
                    f"that the allocation table gives to {owner}, not to sample {i}")
        region_size = int(alloc_table["size"][at[owners.index(i)]])
        return (f"sample {i}, field {name!r}: value of {size} bytes where its allocated region "
                f"holds {region_size} bytes")
    shared = values_in[group_of] > regions_in[group_of]
    if (shared & is_value).any():
        row = first_value(shared)
        i, _ = sample_field(row)
        sharing = [sample_field(int(r))[1]
                   for r in np.flatnonzero(is_value & (group_of == group_of[row]))]
        return (f"sample {i}, fields {', '.join(map(repr, sharing))}: {len(sharing)} values "
                f"point at the same region (ptr {int(ptrs[row])}, {int(sizes[row])} bytes)")
    # Otherwise some (ptr, size, sample) has more regions than values.
    unreferenced = np.flatnonzero(~is_value & (values_in[group_of] < regions_in[group_of]))
    k = int(entry_of_region[unreferenced[0]])
    entry = alloc_table[k]
    return (f"allocation entry {k} (sample {int(entry['sample_id'])}, ptr {int(entry['ptr'])}, "
            f"{int(entry['size'])} bytes) is the value of no field of sample "
            f"{int(entry['sample_id'])}: a corrupt field type id or data pointer?")


def _custom_field(name: str, cls: Any, arguments: np.ndarray) -> Field:
    """The field of a ``custom_fields`` class, built as FFCV builds it (``from_binary``)."""
    if not (isinstance(cls, type) and issubclass(cls, Field)):
        raise TypeError(f"custom_fields[{name!r}] must be a subclass of fastdata.fields.Field, "
                        f"got {cls!r}")
    try:
        field = cls.from_binary(arguments)
    except FormatError:
        raise
    except (ValueError, TypeError) as err:
        raise FormatError(f"field {name!r}: {cls.__name__}.from_binary failed on the stored "
                          f"arguments: {err}") from None
    if not isinstance(field, Field):
        raise TypeError(f"field {name!r}: {cls.__name__}.from_binary returned a "
                        f"{type(field).__name__}, not a Field")
    return field


class ImageSizes(NamedTuple):
    """Every sample's image size, int64[N, 2] arrays of (height, width) in pixels."""
    stored: np.ndarray      # as stored in the file (after the writer's max_resolution)
    original: np.ndarray    # before max_resolution; the stored size where the file has no record


class Reader:
    """Random access to the samples of a ``.beton`` file (written by fastdata or by FFCV).

    ``path``: the file; a list or tuple of files or a glob pattern (``"train-*-of-4.beton"``)
    opens them as one dataset (a fastdata.shards.ShardedReader, same interface).
    ``reader[i]`` is a tuple of field values in file order; ``reader.read(i, name)`` one value.
    Images come back as H x W x 3 uint8 arrays, ints/floats as Python numbers, bytes as bytes,
    JSON as the parsed object, arrays and tensors as numpy arrays.

    ``custom_fields`` (FFCV's Reader calls it ``custom_handlers``; both are accepted) maps a
    field name to its class for fields stored with FFCV's custom type id 255; the field is
    built with ``cls.from_binary(arguments)``, as FFCV builds it.  Raises FormatError (naming
    what is wrong) for a truncated or corrupt file.

    FFCV's Reader attributes are here too: ``handlers`` (field name -> Field, in file order),
    ``num_samples``, ``num_fields``, ``page_size``, ``field_names``, ``header``,
    ``field_descriptors``, ``metadata`` (a record per sample, fields ``f0``, ``f1``, ...),
    ``metadata_type``, ``alloc_table`` and ``file_name``.
    ``accept_jpeg_warnings``: decode JPEG records that libjpeg decodes only with a warning
    (corrupt data), as FFCV does; by default ``read`` raises SampleError for them and for
    records that do not end with the end-of-image marker.

    ``path`` may be an fsspec URL (``s3://``, ``gs://``, ``https://``, ``file://``, ...): the file
    is read page by page into a local page cache (``self.remote``, a fastdata.remote.RemotePages)
    and validated as a local file.  ``storage_options`` go to fsspec; ``cache_dir`` keeps fetched
    pages as files (shareable by processes); ``cache_size`` limits the cache in bytes (None: no
    limit); ``remote_settings`` (fastdata.remote.RemoteSettings) sets timeouts, retries and
    look-ahead.  They apply to URLs only.  A page that cannot be fetched raises
    fastdata.remote.RemotePageError.
    """

    def __new__(cls, path: Any = None, *args: Any, **kwargs: Any) -> "Reader":
        # Several files (a list, tuple or glob pattern) are read as one by the subclass.
        from .shards import ShardedReader, is_shard_set
        if cls is Reader and is_shard_set(path):
            cls = ShardedReader
        return super().__new__(cls)

    def __init__(self, path: str | os.PathLike, custom_fields: Optional[Mapping[str, Type[Field]]]
                 = None, accept_jpeg_warnings: bool = False, *,
                 storage_options: Optional[Mapping[str, Any]] = None,
                 cache_dir: Optional[str | os.PathLike] = None, cache_size: Optional[int] = None,
                 remote_settings: Optional["RemoteSettings"] = None,
                 custom_handlers: Optional[Mapping[str, Type[Field]]] = None):
        self.path = os.fspath(path)
        if custom_fields and custom_handlers:
            raise TypeError("give custom_fields or FFCV's name for it, custom_handlers, not both")
        custom_fields = dict(custom_fields or custom_handlers or {})
        # A URL (s3://, gs://, https://, file://, ...) is read through fsspec into a local page
        # cache (fastdata/remote.py); storage_options, cache_dir, cache_size (bytes) and
        # remote_settings (a remote.RemoteSettings) apply to URLs only.
        self.remote = None
        if "://" in self.path:
            from .remote import RemotePages
            self.remote = RemotePages(self.path, storage_options, cache_dir, cache_size,
                                      remote_settings)
            self.file_size = self.remote.size
            self._mmap = None
        else:
            with open(self.path, "rb") as f:
                self.file_size = os.fstat(f.fileno()).st_size
                if self.file_size >= fmt.HEADER_SIZE:
                    self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        if self.file_size < fmt.HEADER_SIZE:
            self.close()
            raise FormatError(f"{self.path}: {self.file_size} bytes is too short for a header")
        try:
            self._open(custom_fields)
        except FormatError as err:
            self.close()
            raise FormatError(f"{self.path}: {err}") from None
        except BaseException:
            self.close()
            raise
        for field in self.fields.values():
            if isinstance(field, RGBImageField):
                field.accept_jpeg_warnings = bool(accept_jpeg_warnings)

    def _fetch(self, start: int, stop: int) -> None:
        """A remote file: make bytes [start, stop) present for good (what open reads)."""
        if self.remote is not None:
            self.remote.ensure_range(start, stop, for_good=True)

    def _open(self, custom_fields: Mapping[str, Type[Field]]) -> None:
        self.data = self.remote.data if self.remote is not None else \
            np.frombuffer(self._mmap, dtype=np.uint8)
        self._fetch(0, fmt.HEADER_SIZE)
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
        self._fetch(fmt.HEADER_SIZE, meta_start)
        descriptors = self.data[fmt.HEADER_SIZE:meta_start].view(fmt.FIELD_DESC_DTYPE)
        self.fields: dict[str, Field] = {}
        self._custom_names = [name for name in map(fmt.decode_name, descriptors["name"])
                              if name in custom_fields]
        for k, desc in enumerate(descriptors):
            name = fmt.decode_name(desc["name"])
            if name in self.fields:
                raise FormatError(f"field name {name!r} appears twice")
            type_id = int(desc["type_id"])
            if name in custom_fields:
                self.fields[name] = _custom_field(name, custom_fields[name],
                                                  np.array(desc["arguments"]))
                continue
            if type_id in TYPE_IDS:
                cls = TYPE_IDS[type_id]
            elif type_id == CUSTOM_TYPE_ID:
                raise FormatError(f"field {name!r} has a custom type: pass its class in "
                                  f"custom_fields={{{name!r}: ...}}")
            else:
                raise FormatError(f"field {name!r} has unknown type id {type_id} (written by a "
                                  f"newer fastdata?)")
            self.fields[name] = cls.from_arguments(np.array(desc["arguments"]))
        self.field_names = list(self.fields)
        self.num_fields = num_fields
        self.header = header.copy()
        self.field_descriptors = np.array(descriptors)
        self.field_descriptors.setflags(write=False)

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
        self._fetch(meta_start, meta_end)
        self._fetch(self.alloc_table_ptr, self.file_size)
        self.metadata = self.data[meta_start:meta_end].view(self.metadata_dtype)
        self.alloc_table = self.data[self.alloc_table_ptr:].view(fmt.ALLOC_ENTRY_DTYPE)
        self._check_alloc_table(meta_end)
        self.regions = RegionTable(self.alloc_table["ptr"], self.alloc_table["size"])

        # Per field: validated payload pointers and sizes, and the side table if any.
        self._ptrs: dict[str, Optional[np.ndarray]] = {}
        self._sizes: dict[str, Optional[np.ndarray]] = {}
        self._side_tables: dict[str, Optional[np.ndarray]] = {}
        for name, field in self.fields.items():
            column = self.column(name)
            sizes = field.payload_sizes(column, self.regions, name)
            ptrs = field.payload_ptrs(column)
            # Copies, not views of the map: they outlive it (load_into_memory, close).
            self._sizes[name] = None if sizes is None else np.array(sizes, dtype=np.uint64)
            self._ptrs[name] = None if ptrs is None else np.array(ptrs, dtype=np.uint64)
            self._side_tables[name] = self._read_side_table(name, field)
            if self._side_tables[name] is not None:
                field.check_side_table(column, self._side_tables[name], name)
        self._check_regions_match_values()
        if self.remote is not None:
            names = [n for n in self.field_names if self._ptrs[n] is not None]
            self.remote.index_samples([self._ptrs[n] for n in names],
                                      [self._sizes[n] for n in names], self.num_samples)

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

    def _check_regions_match_values(self) -> None:
        if any(type(self.fields[name]).payload_ptrs is Field.payload_ptrs
               and type(self.fields[name]) not in TYPE_IDS.values()
               for name in self._custom_names):
            # A custom field that does not say where its payloads are (FFCV's interface has no
            # way to): its regions cannot be told from stray ones, so the one-to-one check is
            # left out; each known value was still checked against its own region.
            return
        side_table_ptrs = [field.side_table_location[0] for name, field in self.fields.items()
                           if self._side_tables[name] is not None]
        values = [(name, self._ptrs[name], self._sizes[name]) for name in self.field_names
                  if self._ptrs[name] is not None]
        check_regions_match_values(self.alloc_table, values, self.num_samples, side_table_ptrs)

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
                or int(self.regions.sizes[starts]) != nbytes:
            raise FormatError(f"field {name!r}: side table pointer {ptr} is not the start of an "
                              f"allocated region of {nbytes} bytes")
        self._fetch(ptr, ptr + nbytes)
        return self.data[ptr:ptr + nbytes].view(field.side_table_dtype)

    def load_into_memory(self) -> None:
        """Copy the whole file into process memory and drop the memory map (for files that
        should not depend on the page cache; needs RAM for the whole file).  A remote file:
        every page is fetched and none is evicted."""
        if self.remote is not None:
            self.remote.fetch_all()
            return
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

    # -- FFCV's names -----------------------------------------------------------------------------
    @property
    def handlers(self) -> dict[str, Field]:
        """FFCV's name for ``fields``: field name -> Field instance, in file order."""
        return self.fields

    @property
    def file_name(self) -> str:
        """FFCV's name for ``path``."""
        return self.path

    @property
    def metadata_type(self) -> np.dtype:
        """FFCV's name for ``metadata_dtype``."""
        return self.metadata_dtype

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
        """The stored bytes of one value (a read-only view into the file; a copy for a remote
        file, whose pages may be evicted), or None."""
        i = self._index(index)
        ptrs = self._ptrs[name]
        if ptrs is None:
            return None
        start = int(ptrs[i])
        if self.remote is not None:
            return self.remote.read_bytes(start, start + int(self._sizes[name][i]))
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

    def column(self, name: str) -> np.ndarray:
        """Every sample's metadata record of field ``name``: a read-only view into the file, of
        the field's ``metadata_dtype``, shape [N].  KeyError for an unknown field."""
        if name not in self.fields:
            raise KeyError(f"{self.path}: no field {name!r} (fields: {self.field_names})")
        return self.metadata[f"f{self.field_names.index(name)}"]

    def image_sizes(self, name: str) -> ImageSizes:
        """Stored and original (height, width) of every sample of image field ``name``, as
        int64[N, 2] arrays (copies); the original is the stored size where the file records none
        (FFCV's files).  TypeError if ``name`` is not an image field."""
        if not isinstance(self.fields.get(name), RGBImageField):
            raise TypeError(f"{self.path}: field {name!r} is not an image field")
        column = self.column(name)
        stored = np.stack([column["height"], column["width"]], axis=1).astype(np.int64)
        table = self._side_tables[name]
        original = stored.copy() if table is None else \
            np.stack([table["height"], table["width"]], axis=1).astype(np.int64)
        return ImageSizes(stored, original)

    def original_size(self, index: int, name: str) -> tuple[int, int]:
        """(width, height) of an image before ``max_resolution``; the stored size if unknown."""
        i = self._index(index)
        table = self._side_tables[name]
        record = self.column(name)[i] if table is None else table[i]
        return int(record["width"]), int(record["height"])

    def read(self, index: int, name: str) -> Any:
        """The decoded value of field ``name`` of sample ``index``; SampleError if it is bad."""
        i = self._index(index)
        field = self.fields[name]
        side = self._side_tables[name]
        try:
            return field.decode(self.column(name)[i], self.payload(i, name),
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
        if getattr(self, "remote", None) is not None:
            self.remote.close()

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
