"""What every field type provides: its metadata dtype, its 1024 argument bytes, how a value is
encoded when writing, and how a stored value is checked and decoded when reading."""
from __future__ import annotations

import functools
import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Optional

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


#: FFCV's type of a descriptor's argument bytes (``Field.to_binary()`` returns one such record).
ARG_TYPE = np.dtype([("", "<u1", ARGUMENTS_SIZE)])


def accepts_ffcv_call(encode: Callable) -> Callable:
    """Decorator for a fastdata field's ``encode(value, index) -> Encoded`` that also accepts
    FFCV's call ``encode(destination, value, malloc)``, so that a user subclass in FFCV's style
    (``def encode(self, destination, field, malloc): ... return super().encode(destination,
    field, malloc)``) works unchanged.  In FFCV's form the value is encoded as fastdata encodes
    it, its payload is copied into ``malloc(size)`` (which returns (pointer, uint8 buffer)) and
    its metadata record is written to ``destination[0]``."""

    @functools.wraps(encode)
    def dual(self, *args: Any, **kwargs: Any) -> Any:
        if len(args) + len(kwargs) != 3:
            return encode(self, *args, **kwargs)
        bound = inspect.signature(lambda destination, field, malloc: None).bind(*args, **kwargs)
        destination, value, malloc = (bound.arguments[k] for k in ("destination", "field",
                                                                   "malloc"))
        encoded = encode(self, value, getattr(malloc, "sample_index", 0))
        ptr = 0
        if encoded.payload is not None:
            payload = encoded.payload
            raw = np.frombuffer(payload if not isinstance(payload, np.ndarray)
                                else np.ascontiguousarray(payload), dtype=np.uint8)
            ptr, buffer = malloc(raw.size)
            buffer[:] = raw
        destination[0] = self.metadata_record(encoded.meta, ptr)
        return None

    dual.accepts_ffcv_call = True
    return dual


def is_ffcv_style(field: "Field") -> bool:
    """Whether ``field`` encodes in FFCV's way, ``encode(destination, value, malloc)`` (a user
    field written for FFCV), rather than fastdata's ``encode(value, index) -> Encoded``.  Told
    by the number of parameters its ``encode`` takes."""
    encode = type(field).encode
    if getattr(encode, "accepts_ffcv_call", False):
        return False
    params = [p for p in inspect.signature(encode).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(params) == 4      # self, destination, field, malloc


class Field(ABC):
    """A column of a .beton file.  Subclasses set TYPE_ID (FFCV's ids 0-6; ours are >= 100).

    Two ways to write a field type:

    - fastdata's: ``metadata_dtype``, ``encode(value, index) -> Encoded`` (runs in worker
      threads or processes), ``to_arguments``/``from_arguments`` and, for reading,
      ``payload_ptrs``/``payload_sizes``/``decode``;
    - FFCV's (a field written for FFCV, with its imports changed): ``metadata_type``,
      ``encode(destination, field, malloc)``, ``to_binary()``, ``from_binary(binary)`` and
      ``get_decoder_class()``.  The writer runs such an ``encode`` in the calling thread, in
      sample order, with FFCV's ``malloc``; the file records the field with FFCV's custom type
      id 255, so readers need ``custom_fields={name: TheClass}`` as in FFCV.

    Every field also answers FFCV's names: ``metadata_type``, ``to_binary()``,
    ``from_binary(binary)`` and ``get_decoder_class()``.
    """

    TYPE_ID: ClassVar[int]
    # The per-sample record of an optional side table that the writer stores once per file
    # (for example each image's original size); None for fields without one.
    side_table_dtype: ClassVar[Optional[np.dtype]] = None

    @property
    def metadata_dtype(self) -> np.dtype:
        """The dtype of this field's part of each sample's metadata record."""
        if type(self).metadata_type is Field.metadata_type:
            raise TypeError(f"{type(self).__name__} defines neither metadata_dtype (fastdata) "
                            f"nor metadata_type (FFCV)")
        return np.dtype(self.metadata_type)

    @property
    def metadata_type(self) -> np.dtype:
        """FFCV's name for ``metadata_dtype``."""
        return self.metadata_dtype

    def to_arguments(self, side_table: Optional[tuple[int, int]] = None) -> np.ndarray:
        """The 1024 argument bytes of the field descriptor.  ``side_table`` is (ptr, count)."""
        if type(self).to_binary is not Field.to_binary:     # an FFCV-style field's own
            return np.asarray(self.to_binary()[0], dtype=np.uint8).reshape(ARGUMENTS_SIZE)
        return np.zeros(ARGUMENTS_SIZE, dtype=np.uint8)

    @classmethod
    def from_arguments(cls, arguments: np.ndarray) -> "Field":
        """Rebuild the field from its descriptor's argument bytes; FormatError if they are bad."""
        return cls()

    def to_binary(self) -> np.void:
        """FFCV's form of ``to_arguments()``: one ``ARG_TYPE`` record (``[0]`` is uint8[1024])."""
        record = np.zeros(1, dtype=ARG_TYPE)[0]
        record[0][:] = self.to_arguments()
        return record

    @classmethod
    def from_binary(cls, binary: np.ndarray) -> "Field":
        """FFCV's form of ``from_arguments``.  As in FFCV, where each field class's
        ``from_binary`` is a static method building that class, a subclass that does not define
        its own gets an instance of the nearest class that defines ``from_arguments`` or a type
        id (a ``StringField(NDArrayField)`` reads back as an NDArrayField)."""
        arguments = np.asarray(binary, dtype=np.uint8).reshape(-1)
        for klass in cls.__mro__:
            if klass is Field:
                break
            if "TYPE_ID" in vars(klass) or "from_arguments" in vars(klass):
                return klass.from_arguments(arguments)
        raise TypeError(f"{cls.__name__} derives from no fastdata field type: define "
                        f"from_binary(binary) (FFCV) or from_arguments(arguments) (fastdata)")

    def get_decoder_class(self) -> type:
        """FFCV's name for the decoder a Loader pipeline gets for this field by default."""
        from ..ops.base import default_decoder
        return type(default_decoder(self))

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

        Runs in worker threads, so it must not touch shared state.  (An FFCV-style field
        overrides this with ``encode(destination, field, malloc)`` instead; see the class.)"""

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

    def decode(self, record: Any, payload: Optional[np.ndarray], side: Optional[np.void]) -> Any:
        """The value of one sample from its metadata record and payload bytes (uint8 view).

        A field written for FFCV has none (FFCV reads values only through the Loader's
        decoders): TypeError saying so."""
        raise TypeError(f"{type(self).__name__} has no decode(record, payload, side), so "
                        f"Reader.read cannot decode it: read it with a Loader pipeline that "
                        f"decodes it, or Reader.column(name) for its raw metadata records; "
                        f"give the class fastdata's decode (and payload_ptrs/payload_sizes) to "
                        f"read values one by one")


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
