"""Joining a shard set into one ``.beton`` file by copying its records, never re-encoding them.

The merged file is laid out as the writer lays out one file: header, field descriptors, the
concatenated metadata, then each shard's data pages copied whole, each shard starting on a page
boundary (so every sample stays inside one page, as FFCV requires, and keeps its page: the
quasi-random order of the merged file is that of the shard set), then one side table per field
that has them (the shards' tables, concatenated, one after the other from the page boundary
after the last shard), then the allocation table.  Pointers move by
whole pages.  The shards' own side tables stay in the copied pages as unreferenced bytes (a few
bytes per sample); nothing else is added.

The result is written under a temporary name, validated by opening it with Reader (every check
of a file read from disk), and only then renamed to the output path, as the writer does: an
interrupted or failed merge leaves nothing at the output path.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Mapping, Optional, Type

import numpy as np

from . import format as fmt
from .fields import Field
from .reader import Reader
from .shards import ShardedReader, ShardSpec, shift_pointers
from .writer import WriteError, _pwrite_all, _SigtermRaises, atomic_output

_COPY_CHUNK = 64 << 20     # bytes per pwrite: bounded syscalls, steady progress


@dataclass
class MergeReport:
    """What a merge did.  ``seconds`` is wall time; ``file_size`` is in bytes."""
    path: str
    num_shards: int
    num_samples: int
    file_size: int
    seconds: float

    @property
    def megabytes_per_second(self) -> float:
        """Output bytes (1e6) written per second of wall time."""
        return self.file_size / 1e6 / self.seconds if self.seconds > 0 else float("inf")


def merge_shards(shards: ShardSpec, out: str | os.PathLike,
                 custom_fields: Optional[Mapping[str, Type[Field]]] = None) -> MergeReport:
    """Join the files of a shard set (a list of paths or a glob pattern, ordered as
    fastdata.shards.shard_paths orders them) into one file ``out``, readable by fastdata and
    FFCV, holding the same records in the same order.

    FormatError naming the file for a corrupt shard or one whose fields or page size differ;
    ValueError for a missing, repeated or foreign ``-K-of-N`` shard, or ``out`` being a shard;
    WriteError if the output folder does not exist."""
    out = os.fspath(out)
    started = time.perf_counter()
    out_dir = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(out_dir):
        raise WriteError(f"output folder {out_dir} does not exist")
    with ShardedReader(shards, custom_fields) as reader:
        if any(os.path.exists(out) and os.path.samefile(out, p) for p in reader.paths):
            raise ValueError(f"{out}: the output is one of the shards")
        with _SigtermRaises(), atomic_output(out) as (fd, tmp_path):
            _write_merged(fd, reader)
            Reader(tmp_path, custom_fields).close()      # checked before it takes out's name
        num_shards, num_samples = len(reader.shards), reader.num_samples
    return MergeReport(out, num_shards, num_samples, os.path.getsize(out),
                       time.perf_counter() - started)


def _copy(fd: int, offset: int, data: np.ndarray) -> None:
    for start in range(0, len(data), _COPY_CHUNK):
        _pwrite_all(fd, offset + start, data[start:start + _COPY_CHUNK])


def _write_merged(fd: int, reader: ShardedReader) -> None:
    page_size, num_samples = reader.page_size, reader.num_samples
    pos = fmt.data_start(len(reader.fields), num_samples, reader.metadata_dtype.itemsize,
                         page_size)
    # Each shard's pages, copied whole; deltas take a pointer in the reader's combined range to
    # the merged file.
    deltas, alloc_parts = [], []
    for shard in reader.shards:
        length = shard.data_end - shard.data_start
        start = shard.offset + shard.data_start
        _copy(fd, pos, reader.data[start:start + length])
        delta = pos - start
        rows = reader.alloc_table[shard.alloc_rows.start:shard.alloc_rows.stop]
        rows = rows[rows["sample_id"] != fmt.NO_SAMPLE_ID].copy()
        rows["ptr"] += np.uint64(delta & 0xFFFFFFFFFFFFFFFF)    # modulo 2**64: may be < 0
        alloc_parts.append(rows)
        deltas.append(delta)
        pos = fmt.align_up(pos + length, page_size)

    descriptors = reader.descriptors.copy()
    for k, (name, field) in enumerate(reader.fields.items()):
        table = reader.side_table(name)
        if table is None:
            continue
        blob = np.ascontiguousarray(table).view(np.uint8).reshape(-1)
        _copy(fd, pos, blob)
        alloc_parts.append(np.array([(int(fmt.NO_SAMPLE_ID), pos, blob.nbytes)],
                                    dtype=fmt.ALLOC_ENTRY_DTYPE))
        descriptors[k]["arguments"] = field.to_arguments((pos, num_samples))
        pos += blob.nbytes

    if pos == fmt.data_start(len(reader.fields), num_samples, reader.metadata_dtype.itemsize,
                             page_size):
        # no data pages (every field lives in the metadata): the table follows the metadata,
        # as the writer places it
        pos = fmt.metadata_start(len(reader.fields)) + num_samples * reader.metadata_dtype.itemsize
    alloc_table = np.concatenate(alloc_parts)
    _pwrite_all(fd, pos, alloc_table.tobytes())
    os.ftruncate(fd, pos + alloc_table.nbytes)
    metadata = np.array(reader.metadata)      # a writable copy
    shift_pointers(metadata, reader.fields,
                   [range(s.first_sample, s.first_sample + s.num_samples)
                    for s in reader.shards], deltas)
    header = np.zeros((), dtype=fmt.HEADER_DTYPE)
    header["version"] = fmt.VERSION
    header["num_fields"] = len(reader.fields)
    header["page_size"] = page_size
    header["num_samples"] = num_samples
    header["alloc_table_ptr"] = pos
    _pwrite_all(fd, 0, header.tobytes() + descriptors.tobytes() + metadata.tobytes())
