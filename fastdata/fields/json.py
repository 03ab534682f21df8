"""JSONField (type 5): a JSON document per sample, stored as UTF-8 text plus one NUL byte."""
from __future__ import annotations

import json
from typing import Any, Optional

import numpy as np

from ..format import FormatError
from .base import Encoded
from .bytes import BytesField


class JSONField(BytesField):
    """Any JSON-serialisable object.  Only ever parsed as JSON when read, never unpickled."""

    TYPE_ID = 5

    def encode(self, value: Any, index: int) -> Encoded:
        try:
            text = json.dumps(value)
        except (TypeError, ValueError) as err:
            raise TypeError(f"JSONField value is not JSON-serialisable: {err}") from None
        # FFCV separates documents with a NUL; json.dumps escapes every control character,
        # so the text itself can never contain one.
        payload = text.encode("utf-8") + b"\0"
        return Encoded(payload, len(payload))

    def decode(self, record: Any, payload: Optional[np.ndarray], side: Any) -> Any:
        raw = payload.tobytes().split(b"\0", 1)[0]
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as err:
            raise FormatError(f"stored JSON is not valid: {err}") from None
