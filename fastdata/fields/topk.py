"""TopKField (type 102): a teacher's top-k class ids (int16) and probabilities (float16) per
sample, for distillation from precomputed soft labels (MEAL V2 / FKD style, no stored
augmentation).  Payload: k ids then k probabilities, little-endian; metadata: its pointer."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ..constants import MAX_CLASS_ID, MAX_TOP_K
from ..format import FormatError
from .base import Encoded, accepts_ffcv_call, FixedSizeField, pack_arguments, unpack_arguments

_ARGS = np.dtype([("k", "<u4")])


def split_topk(value: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids int16[k], probs float16[k]) from an (ids, probs) pair or a dense vector of
    probabilities (its k largest are kept).  ValueError naming what is wrong."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        ids, probs = (np.asarray(v) for v in value)
    else:
        dense = np.asarray(value, dtype=np.float64)
        if dense.ndim != 1 or len(dense) < k:
            raise ValueError(f"expected (ids, probs) or a vector of >= {k} probabilities, got "
                             f"shape {dense.shape}")
        ids = np.argsort(-dense, kind="stable")[:k]
        probs = dense[ids]
    if ids.shape != (k,) or probs.shape != (k,):
        raise ValueError(f"expected {k} ids and {k} probabilities, got {ids.shape} and "
                         f"{probs.shape}")
    if not np.all(np.isfinite(probs)) or np.any(probs < 0):
        raise ValueError("probabilities must be finite and non-negative")
    if np.any(ids < 0) or np.any(ids > MAX_CLASS_ID) or np.any(ids != np.round(ids)):
        raise ValueError(f"class ids must be integers in [0, {MAX_CLASS_ID}]")
    if len(np.unique(ids)) != k:
        raise ValueError("class ids must be distinct")
    return ids.astype("<i2"), probs.astype("<f2")


class TopKField(FixedSizeField):
    """k (class id, probability) pairs per sample."""

    TYPE_ID = 102

    def __init__(self, k: int = 10):
        if not 1 <= int(k) <= MAX_TOP_K:
            raise ValueError(f"k must be in [1, {MAX_TOP_K}], got {k}")
        self.k = int(k)
        self.nbytes = 4 * self.k

    def to_arguments(self, side_table: Optional[tuple[int, int]] = None) -> np.ndarray:
        return pack_arguments(np.array(self.k, dtype=_ARGS))

    @classmethod
    def from_arguments(cls, arguments: np.ndarray) -> "TopKField":
        k = int(unpack_arguments(arguments, _ARGS)["k"])
        try:
            return cls(k)
        except ValueError as err:
            raise FormatError(f"bad top-k field arguments: {err}") from None

    @accepts_ffcv_call
    def encode(self, value: Any, index: int) -> Encoded:
        ids, probs = split_topk(value, self.k)
        return Encoded(ids.tobytes() + probs.tobytes(), None)


    def decode(self, record: Any, payload: Optional[np.ndarray], side: Any) -> tuple:
        raw = payload.tobytes()
        ids = np.frombuffer(raw[:2 * self.k], dtype="<i2").astype(np.int64)
        probs = np.frombuffer(raw[2 * self.k:], dtype="<f2").astype(np.float32)
        return ids, probs
