"""JSONField (type 5): a JSON document per sample, stored as UTF-8 text plus one NUL byte."""
from __future__ import annotations

import json
from typing import Any, Optional

import numpy as np

from ..format import FormatError
from .base import Encoded, accepts_ffcv_call
from .bytes import BytesField


class JSONField(BytesField):
    """Any JSON-serialisable object.  Only ever parsed as JSON when read, never unpickled."""

    TYPE_ID = 5

    @accepts_ffcv_call
    def encode(self, value: Any, index: int) -> Encoded:
        try:
            text = json.dumps(value)
        except (TypeError, ValueError) as err:
            raise TypeError(f"JSONField value is not JSON-serialisable: {err}") from None
        # FFCV separates documents with a NUL; json.dumps escapes every control character,
        # so the text itself can never contain one.
        payload = text.encode("utf-8") + b"\0"
        return Encoded(payload, len(payload))

    @staticmethod
    def unpack(batch: Any) -> Any:
        """FFCV's ``JSONField.unpack``: the JSON documents of a batch of stored bytes.

        ``batch``: uint8[B, L] (what BytesDecoder gives for a JSON field: each row a document,
        NUL-terminated, zero-padded), a numpy array or torch tensor, gives a list of B
        documents; uint8[L] (one sample) gives one document.  A list (what fastdata's default
        JSONDecoder gives: the documents, already parsed) comes back as a list, rows that are
        still bytes or uint8 arrays parsed.  ValueError for a row without a NUL or that is not
        valid JSON."""
        if isinstance(batch, (list, tuple)):
            return [JSONField.unpack(item) if isinstance(item, (bytes, bytearray, np.ndarray))
                    or _is_tensor(item) else item for item in batch]
        if _is_tensor(batch):
            batch = batch.detach().cpu().numpy()
        if isinstance(batch, (bytes, bytearray)):
            batch = np.frombuffer(batch, dtype=np.uint8)
        array = np.asarray(batch)
        if array.dtype != np.uint8 or array.ndim not in (1, 2):
            raise ValueError(f"JSONField.unpack needs uint8 rows (shape [L] or [B, L]), got "
                             f"{array.dtype} of shape {array.shape}")
        rows = [array] if array.ndim == 1 else list(array)
        docs = []
        for k, row in enumerate(rows):
            ends = np.flatnonzero(row == 0)
            if not len(ends):
                raise ValueError(f"JSONField.unpack: row {k} has no NUL terminator (not a "
                                 f"JSON field's bytes?)")
            try:
                docs.append(json.loads(row[:ends[0]].tobytes().decode("utf-8")))
            except (UnicodeDecodeError, ValueError) as err:
                raise ValueError(f"JSONField.unpack: row {k} is not valid JSON: {err}") from None
        return docs[0] if array.ndim == 1 else docs

    def decode(self, record: Any, payload: Optional[np.ndarray], side: Any) -> Any:
        raw = payload.tobytes().split(b"\0", 1)[0]
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as err:
            raise FormatError(f"stored JSON is not valid: {err}") from None


def _is_tensor(value: Any) -> bool:
    """A torch tensor, told without importing torch."""
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")
