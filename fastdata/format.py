"""The on-disk layout of a ``.beton`` file: FFCV's format version 2, byte for byte.

::

    offset 0                      header (24 bytes, HEADER_DTYPE)
    offset 24                     num_fields field descriptors (1041 bytes each, FIELD_DESC_DTYPE)
    metadata_start                num_samples metadata records (one aligned struct per sample,
                                  sub-records named f0, f1, ... in field order)
    data_start (page aligned)     full pages of page_size bytes holding every variable-size value
    alloc_table_ptr .. EOF        allocation table, 24 bytes per region (ALLOC_ENTRY_DTYPE)

All integers are little-endian.  Page numbers are absolute (``ptr >> log2(page_size)``).
``docs/format.md`` in the repository is the full description this module follows: every region,
each field type's metadata, arguments and payload, how the allocation table is filled by FFCV's
writer and by ours, and what the reader checks at open.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

VERSION = 2
HEADER_SIZE = 24
FIELD_DESC_SIZE = 1041
FIELD_NAME_SIZE = 16
ARGUMENTS_SIZE = 1024
MIN_PAGE_SIZE = 1 << 21       # FFCV's writer refuses smaller pages
MAX_PAGE_SIZE = 1 << 32       # exclusive: page_size is a u4

HEADER_DTYPE = np.dtype([
    ("version", "<u2"),
    ("num_fields", "<u2"),
    ("page_size", "<u4"),
    ("num_samples", "<u8"),
    ("alloc_table_ptr", "<u8"),
], align=True)

FIELD_DESC_DTYPE = np.dtype([
    ("type_id", "<u1"),
    ("name", ("<u1", FIELD_NAME_SIZE)),
    ("arguments", ("<u1", ARGUMENTS_SIZE)),
], align=True)

ALLOC_ENTRY_DTYPE = np.dtype([
    ("sample_id", "<u8"),
    ("ptr", "<u8"),
    ("size", "<u8"),
])

# Allocations that belong to no sample (fastdata's per-field side tables) carry this sample id.
# FFCV's readers only look allocations up by pointer, and its quasi-random order keeps only ids
# that are in the loader's index set, so such an entry is invisible to FFCV.
NO_SAMPLE_ID = np.uint64(0xFFFFFFFFFFFFFFFF)

assert HEADER_DTYPE.itemsize == HEADER_SIZE
assert FIELD_DESC_DTYPE.itemsize == FIELD_DESC_SIZE
assert ALLOC_ENTRY_DTYPE.itemsize == 24


class FormatError(ValueError):
    """A ``.beton`` file (or a value being written to one) breaks the format's rules."""


def align_up(offset: int, page_size: int) -> int:
    """The smallest multiple of ``page_size`` that is >= ``offset``."""
    remainder = offset % page_size
    return offset if remainder == 0 else offset + page_size - remainder


def metadata_dtype(field_dtypes: Sequence[np.dtype]) -> np.dtype:
    """The per-sample record: each field's metadata dtype named f0, f1, ... with C alignment."""
    return np.dtype([(f"f{i}", dt) for i, dt in enumerate(field_dtypes)], align=True)


def metadata_start(num_fields: int) -> int:
    """File offset of the first metadata record."""
    return HEADER_SIZE + FIELD_DESC_SIZE * num_fields


def data_start(num_fields: int, num_samples: int, record_size: int, page_size: int) -> int:
    """File offset of page-aligned data, just past the metadata table."""
    return align_up(metadata_start(num_fields) + num_samples * record_size, page_size)


def check_page_size(page_size: int) -> None:
    """Raise FormatError unless ``page_size`` is a power of two in [2 MiB, 4 GiB)."""
    if not (MIN_PAGE_SIZE <= page_size < MAX_PAGE_SIZE) or page_size & (page_size - 1):
        raise FormatError(
            f"page size {page_size} must be a power of two in [{MIN_PAGE_SIZE}, {MAX_PAGE_SIZE})")


def encode_name(name: str) -> np.ndarray:
    """A field name as FFCV stores it: ASCII, at most 16 bytes, NUL-padded."""
    try:
        raw = name.encode("ascii")
    except UnicodeEncodeError:
        raise FormatError(f"field name {name!r} must be ASCII") from None
    if not raw or len(raw) > FIELD_NAME_SIZE or b"\0" in raw:
        raise FormatError(f"field name {name!r} must be 1 to {FIELD_NAME_SIZE} ASCII characters")
    out = np.zeros(FIELD_NAME_SIZE, dtype=np.uint8)
    out[:len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    return out


def decode_name(raw: np.ndarray) -> str:
    """Inverse of encode_name; a 16-character name has no terminator."""
    data = bytes(raw).split(b"\0", 1)[0]
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise FormatError(f"field name bytes {data!r} are not ASCII") from None
