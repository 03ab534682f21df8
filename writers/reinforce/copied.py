"""The fields of an existing .beton file, written again as stored: same type ids, arguments,
metadata and payload bytes (images keep their JPEG/raw bytes and original-size side table;
nothing is re-encoded).  Both reinforce writers copy the input this way and add one field."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from fastdata.fields import RGBImageField
from fastdata.fields.base import Encoded, Field
from fastdata.fields.reinforce import ReinforcementField
from fastdata.reader import Reader


class CopiedField(Field):
    """A field of an open Reader written again as stored: same type id, arguments, metadata and
    payload bytes.  Values are sample indices of the input file."""

    side_table_dtype = None

    def __init__(self, reader: Reader, name: str):
        self.reader, self.name = reader, name
        self.inner = reader.fields[name]
        self.TYPE_ID = self.inner.TYPE_ID
        self.side_table_dtype = self.inner.side_table_dtype
        self.column = reader.column(name)
        self.table = reader.side_table(name)
        # An image field of a file without a side table (FFCV's): its original sizes are the
        # stored ones, recorded in the copy's side table.
        self.original = reader.image_sizes(name).original \
            if isinstance(self.inner, RGBImageField) else None

    @property
    def metadata_dtype(self) -> np.dtype:
        return self.inner.metadata_dtype

    def to_arguments(self, side_table=None) -> np.ndarray:
        return self.inner.to_arguments(side_table)

    def encode(self, value: Any, index: int) -> Encoded:
        i = int(value)
        record = self.column[i]
        payload = self.reader.payload(i, self.name)
        side = None
        if self.side_table_dtype is not None:
            if self.table is not None:
                side = tuple(self.table[i].tolist())
            elif self.original is not None:
                height, width = self.original[i]
                side = (int(width), int(height))
            else:
                side = tuple(np.zeros((), self.side_table_dtype).tolist())
        return Encoded(None if payload is None else payload.tobytes(), record, side)
    def metadata_record(self, meta: Any, ptr: int) -> Any:
        column = np.array([meta], dtype=self.metadata_dtype)
        ptrs = self.inner.payload_ptrs(column)
        if ptrs is not None:
            if not np.shares_memory(ptrs, column):
                raise TypeError(f"cannot copy field {self.name!r}: its pointer is not a column")
            ptrs[...] = ptr
        return column[0]

    def decode(self, record, payload, side):
        return self.inner.decode(record, payload, side)


def copied_fields(reader: Reader, drop: Sequence[str] = ()) -> dict:
    """A CopiedField for each field of ``reader`` not in ``drop``, in file order."""
    return {name: CopiedField(reader, name) for name in reader.field_names if name not in drop}


def page_size_for(reader: Reader, field: ReinforcementField) -> int:
    """The input's page size, doubled until one sample of every copied field plus ``field``
    fits in a page."""
    largest = 0
    for name in reader.field_names:
        sizes = reader.payload_sizes(name)
        if sizes is not None and len(sizes):
            largest += int(sizes.max()) + 1
    need = largest + field.nbytes + 1
    size = reader.page_size
    while size < need:
        size *= 2
    return size


def source_image(reader: Reader, image: Optional[str], field_name: str
                 ) -> tuple[str, np.ndarray]:
    """(image field name, original (height, width) sizes int64[n, 2]) of the file a reinforcement field is added to;
    ValueError if it already has ``field_name`` or the image field is missing or ambiguous."""
    if field_name in reader.fields:
        raise ValueError(f"{reader.path} already has a field {field_name!r}")
    if image is None:
        names = [n for n in reader.field_names if isinstance(reader.fields[n], RGBImageField)]
        if len(names) != 1:
            raise ValueError(f"{reader.path}: name the image field (image fields: {names})")
        image = names[0]
    elif image not in reader.fields or not isinstance(reader.fields[image], RGBImageField):
        raise ValueError(f"{reader.path}: no image field {image!r}")
    return image, reader.image_sizes(image).original
