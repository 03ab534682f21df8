"""What every field type provides: its metadata dtype, its 1024 argument bytes, how a value is
encoded when writing, and how a stored value is checked and decoded when reading."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import numpy as np

from ..format import ARGUMENTS_SIZE, FormatError


@dataclass
class Encoded:
    """One value, encoded by a worker thread, before it is placed in a page.

    payload: the bytes to store in the data pages (None for fields that live in the metadata).
    meta: the metadata record's fields except the data pointer (see Field.metadata_record).
    side: this sample's record in the field's side table (see Field.side_table_dtype), if any.
    """
    payload: Optional[Any]
    meta: Any
    side: Optional[tuple] = None


class RegionTable:
    """The allocation table, sorted, to look up the size of the region that starts at a pointer.

    FFCV files may hold zero-size regions that share a pointer with the next region; for a pointer
    that starts several regions the largest one is the one a field refers to.
    """

    def __init__(self, ptrs: np.ndarray, sizes: np.ndarray):
        order = np.lexsort((sizes, ptrs))
        ptrs, sizes = ptrs[order], sizes[order]
        last_of_ptr = np.ones(len(ptrs), dtype=bool)
        last_of_ptr[:-1] = ptrs[1:] != ptrs[:-1]
        self.ptrs = ptrs[last_of_ptr]
        self.sizes = sizes[last_of_ptr]

    def sizes_at(self, ptrs: np.ndarray, field_name: str) -> np.ndarray:
        """The size of the region starting at each of ``ptrs``; FormatError if one starts none."""
        pos = np.searchsorted(self.ptrs, ptrs)
        pos_clipped = np.minimum(pos, max(len(self.ptrs) - 1, 0))
        found = (pos < len(self.ptrs)) & (self.ptrs[pos_clipped] == ptrs) if len(self.ptrs) else \
            np.zeros(len(ptrs), dtype=bool)
        if not found.all():
            bad = int(np.argmin(found))
            raise FormatError(f"sample {bad}, field {field_name!r}: data pointer {int(ptrs[bad])} "
                              f"is not the start of any allocated region")
        return self.sizes[pos]


def pack_arguments(*parts: Any) -> np.ndarray:
    """A field descriptor's argument bytes: ``parts`` (numpy records or arrays, or bytes) one
    after the other, then zeros up to ARGUMENTS_SIZE (1024): uint8[1024].  ValueError if they
    do not fit."""
    raw = b"".join(p if isinstance(p, bytes) else np.asarray(p).tobytes() for p in parts)
    if len(raw) > ARGUMENTS_SIZE:
        raise ValueError(f"field arguments of {len(raw)} bytes exceed {ARGUMENTS_SIZE}")
    out = np.zeros(ARGUMENTS_SIZE, dtype=np.uint8)
    out[:len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    return out


def unpack_arguments(arguments: np.ndarray, dtype: np.dtype) -> np.void:
    """The record of ``dtype`` at the start of a descriptor's argument bytes (a copy)."""
    raw = np.asarray(arguments, dtype=np.uint8)[:dtype.itemsize].tobytes()
    return np.frombuffer(raw, dtype=dtype)[0]


class Field(ABC):
    """A column of a .beton file.  Subclasses set TYPE_ID (FFCV's ids 0-6; ours are >= 100)."""

    TYPE_ID: ClassVar[int]
    # The per-sample record of an optional side table that the writer stores once per file
    # (for example each image's original size); None for fields without one.
    side_table_dtype: ClassVar[Optional[np.dtype]] = None

    @property
    @abstractmethod
    def metadata_dtype(self) -> np.dtype:
        """The dtype of this field's part of each sample's metadata record."""

    def to_arguments(self, side_table: Optional[tuple[int, int]] = None) -> np.ndarray:
        """The 1024 argument bytes of the field descriptor.  ``side_table`` is (ptr, count)."""
        return np.zeros(ARGUMENTS_SIZE, dtype=np.uint8)

    @classmethod
    def from_arguments(cls, arguments: np.ndarray) -> "Field":
        """Rebuild the field from its descriptor's argument bytes; FormatError if they are bad."""
        return cls()

    def describe(self) -> str:
        """The field with its arguments, for ``fastdata inspect``."""
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items()
                         if not k.startswith("_") and k != "nbytes")
        return f"{type(self).__name__}({args})"

    @property
    def side_table_location(self) -> Optional[tuple[int, int]]:
        """(ptr, count) of the side table, once read from a file's arguments; else None."""
        return None

    # -- writing --------------------------------------------------------------------------------
    @abstractmethod
    def encode(self, value: Any, index: int) -> Encoded:
        """Encode ``value`` of source sample ``index``; raise ValueError/TypeError if it is bad.

        Runs in worker threads, so it must not touch shared state."""

    def metadata_record(self, meta: Any, ptr: int) -> Any:
        """The metadata record for an encoded value whose payload was placed at ``ptr``."""
        return meta

    # -- reading --------------------------------------------------------------------------------
    def payload_sizes(self, column: np.ndarray, regions: RegionTable,
                      name: str) -> Optional[np.ndarray]:
        """Check this field's metadata column against the allocation table (once, at open).

        Returns the payload size of every sample (None for fields without payloads) and raises
        FormatError naming the first bad sample, so that decode() can trust every pointer."""
        return None

    def payload_ptrs(self, column: np.ndarray) -> Optional[np.ndarray]:
        """Each sample's payload pointer (None for fields without payloads)."""
        return None

    def check_side_table(self, column: np.ndarray, table: np.ndarray, name: str) -> None:
        """Check the side table (one ``side_table_dtype`` record per sample) against this field's
        metadata column, once at open; FormatError naming the first bad sample."""

    @abstractmethod
    def decode(self, record: Any, payload: Optional[np.ndarray], side: Optional[np.void]) -> Any:
        """The value of one sample from its metadata record and payload bytes (uint8 view)."""


def check_ptr_column(ptrs: np.ndarray, sizes: np.ndarray, regions: RegionTable, name: str) -> None:
    """FormatError unless each (ptr, size) lies inside the allocated region starting at ptr."""
    available = regions.sizes_at(ptrs, name)
    too_big = sizes > available
    if too_big.any():
        bad = int(np.argmax(too_big))
        raise FormatError(f"sample {bad}, field {name!r}: value of {int(sizes[bad])} bytes does "
                          f"not fit its allocated region of {int(available[bad])} bytes")


class FixedSizeField(Field):
    """A field whose every value is ``nbytes`` bytes in the data pages and whose metadata is
    just the pointer to them (NDArrayField and fastdata's label-map, top-k and reinforcement
    fields).  Subclasses set ``self.nbytes`` and implement encode and decode."""

    nbytes: int

    @property
    def metadata_dtype(self) -> np.dtype:
        return np.dtype("<u8")

    def metadata_record(self, meta: Any, ptr: int) -> int:
        return ptr

    def payload_ptrs(self, column: np.ndarray) -> np.ndarray:
        return column

    def payload_sizes(self, column: np.ndarray, regions: RegionTable, name: str) -> np.ndarray:
        sizes = np.full(len(column), self.nbytes, dtype=np.uint64)
        check_ptr_column(column, sizes, regions, name)
        return sizes
