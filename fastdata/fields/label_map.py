"""LabelMapField (type 100, fastdata's own): a top-k class map per image, as ReLabel's label maps.

Each sample holds, for every cell of an H x W grid over the image, the ids and scores of its
top-k classes: ids as int16 (0..32767) and scores as float16, k x H x W each.  ReLabel's released
files are [2, 5, 15, 15] tensors (row 0 scores, row 1 class ids as floats), about 9 KB each in
float32; stored here they take 4.5 KB.  Scores are rounded to float16 (3 significant digits).

- Metadata: the data pointer (<u8), as NDArrayField.
- Payload: ids int16 [k, H, W] then scores float16 [k, H, W], little-endian, C order.
- Arguments: b"FDLM", version (<u4), k, H, W (<u4 each); the rest zero.

FFCV does not know type id 100 and refuses to open a file that has such a field (its reader
raises KeyError: 100 at open), so a file with label maps is fastdata-only.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional

import numpy as np

from ..constants import MAX_CLASS_ID
from ..format import FormatError
from .base import Encoded, accepts_ffcv_call, FixedSizeField, pack_arguments, unpack_arguments

ARGS_MAGIC = b"FDLM"
ARGS_VERSION = 1
ARGS_DTYPE = np.dtype([("magic", "S4"), ("version", "<u4"), ("k", "<u4"), ("height", "<u4"),
                       ("width", "<u4")])
FLOAT16_MAX = 65504.0
MAX_CELLS = 1 << 24                # k * H * W: 64 MiB per sample, far beyond any real map
ID_DTYPE = np.dtype("<i2")
SCORE_DTYPE = np.dtype("<f2")


class LabelMap(NamedTuple):
    """One decoded label map: ``scores`` float16 [k, H, W] and ``ids`` int16 [k, H, W]."""
    scores: np.ndarray
    ids: np.ndarray

    def to_array(self) -> np.ndarray:
        """float32 [2, k, H, W] in the released files' layout (row 0 scores, row 1 ids)."""
        return np.stack([self.scores.astype(np.float32), self.ids.astype(np.float32)])


def as_numpy(value: Any, what: str) -> np.ndarray:
    """A numpy array of ``value`` (numpy, torch tensor, nested lists); TypeError if not numeric.

    Torch tensors are recognised without importing torch."""
    if type(value).__module__.startswith("torch") and hasattr(value, "detach"):
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        value = value.numpy()
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as err:
        raise TypeError(f"{what} is not an array ({err})") from None
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{what} must hold real numbers, got dtype {array.dtype}")
    return array


def _where(mask: np.ndarray) -> tuple:
    return tuple(int(i) for i in np.argwhere(mask)[0])


class LabelMapField(FixedSizeField):
    """Top-``k`` class maps of ``height`` x ``width`` cells (ReLabel: k=5, 15 x 15).

    Values to write: an array or tensor [2, k, H, W] (row 0 scores, row 1 class ids as numbers,
    the layout of ReLabel's files), a ``(scores, ids)`` pair of [k, H, W] arrays, or a LabelMap.
    Scores must be finite and fit float16; ids must be whole numbers in [0, 32767], distinct at
    each cell.  Reading gives a LabelMap (scores float16, ids int16).
    """

    TYPE_ID = 100

    def __init__(self, k: int = 5, height: int = 15, width: int = 15):
        dims = {"k": k, "height": height, "width": width}
        for name, v in dims.items():
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
                raise ValueError(f"LabelMapField {name} must be a positive integer, got {v!r}")
        self.k, self.height, self.width = int(k), int(height), int(width)
        if self.k * self.height * self.width > MAX_CELLS:
            raise ValueError(f"LabelMapField of {self.k} x {self.height} x {self.width} entries "
                             f"is too large (at most {MAX_CELLS:,})")
        self.cells = self.k * self.height * self.width
        self.nbytes = self.cells * (ID_DTYPE.itemsize + SCORE_DTYPE.itemsize)

    def __repr__(self) -> str:
        return f"LabelMapField(k={self.k}, height={self.height}, width={self.width})"

    @property
    def map_shape(self) -> tuple[int, int, int]:
        """(k, height, width) of the scores and of the ids."""
        return self.k, self.height, self.width

    def to_arguments(self, side_table: Optional[tuple[int, int]] = None) -> np.ndarray:
        args = np.zeros((), dtype=ARGS_DTYPE)
        args["magic"] = ARGS_MAGIC
        args["version"] = ARGS_VERSION
        args["k"], args["height"], args["width"] = self.k, self.height, self.width
        return pack_arguments(args)

    @classmethod
    def from_arguments(cls, arguments: np.ndarray) -> "LabelMapField":
        args = unpack_arguments(arguments, ARGS_DTYPE)
        if bytes(args["magic"]) != ARGS_MAGIC:
            raise FormatError(f"label-map field arguments do not start with {ARGS_MAGIC!r}")
        if int(args["version"]) != ARGS_VERSION:
            raise FormatError(f"label-map field arguments version {int(args['version'])} is not "
                              f"{ARGS_VERSION} (written by a newer fastdata?)")
        try:
            return cls(int(args["k"]), int(args["height"]), int(args["width"]))
        except ValueError as err:
            raise FormatError(f"bad label-map field arguments: {err}") from None

    # -- writing --------------------------------------------------------------------------------
    def validate(self, value: Any) -> LabelMap:
        """``value`` as a checked LabelMap (float16 scores, int16 ids); ValueError or TypeError
        naming what is wrong."""
        expected = self.map_shape
        if isinstance(value, (tuple, list)) and len(value) == 2 and not np.isscalar(value[0]):
            scores = as_numpy(value[0], "label map scores")
            ids = as_numpy(value[1], "label map ids")
            for what, a in (("scores", scores), ("ids", ids)):
                if a.shape != expected:
                    raise ValueError(f"label map {what} have shape {a.shape}, the field expects "
                                     f"{expected} (k, height, width)")
        else:
            array = as_numpy(value, "label map")
            if array.shape != (2, *expected):
                raise ValueError(f"label map of shape {array.shape}, the field expects "
                                 f"{(2, *expected)} (scores and ids, k, height, width)")
            scores, ids = array[0], array[1]

        if scores.dtype.kind == "b":
            raise TypeError("label map scores must be numbers, got booleans")
        scores64 = scores.astype(np.float64, copy=False)
        bad = ~np.isfinite(scores64)
        if bad.any():
            at = _where(bad)
            raise ValueError(f"label map score {scores64[at]} at [k, row, col] = {list(at)} is "
                             f"not finite")
        big = np.abs(scores64) > FLOAT16_MAX
        if big.any():
            at = _where(big)
            raise ValueError(f"label map score {scores64[at]} at {list(at)} overflows float16 "
                             f"(|score| <= {FLOAT16_MAX:g})")

        if ids.dtype.kind == "b":
            raise TypeError("label map ids must be numbers, got booleans")
        if ids.dtype.kind == "f":
            ids64 = ids.astype(np.float64, copy=False)
            bad = ~np.isfinite(ids64) | (ids64 != np.round(ids64))
            if bad.any():
                at = _where(bad)
                raise ValueError(f"label map class id {ids64[at]} at {list(at)} is not a whole "
                                 f"number")
        else:
            ids64 = ids.astype(np.int64, copy=False)
        bad = (ids64 < 0) | (ids64 > MAX_CLASS_ID)
        if bad.any():
            at = _where(bad)
            raise ValueError(f"label map class id {ids64[at]:g} at {list(at)} is outside "
                             f"[0, {MAX_CLASS_ID}]")
        ids16 = ids64.astype(np.int16)
        if self.k > 1:
            ordered = np.sort(ids16, axis=0)
            dup = (ordered[1:] == ordered[:-1]).any(axis=0)
            if dup.any():
                r, c = _where(dup)
                column = ordered[:, r, c]
                twice = int(column[1:][column[1:] == column[:-1]][0])
                raise ValueError(f"label map class id {twice} appears more than once at cell "
                                 f"(row {r}, col {c})")
        return LabelMap(scores64.astype(np.float16), ids16)

    @accepts_ffcv_call
    def encode(self, value: Any, index: int) -> Encoded:
        checked = self.validate(value)
        payload = (np.ascontiguousarray(checked.ids, dtype=ID_DTYPE).tobytes()
                   + np.ascontiguousarray(checked.scores, dtype=SCORE_DTYPE).tobytes())
        return Encoded(payload, None)

    # -- reading --------------------------------------------------------------------------------
    def decode(self, record: Any, payload: Optional[np.ndarray], side: Any) -> LabelMap:
        raw = payload.tobytes()
        half = self.cells * ID_DTYPE.itemsize
        ids = np.frombuffer(raw, dtype=ID_DTYPE, count=self.cells).reshape(self.map_shape)
        scores = np.frombuffer(raw, dtype=SCORE_DTYPE, count=self.cells, offset=half) \
            .reshape(self.map_shape)
        return LabelMap(scores.astype(np.float16), ids.astype(np.int16))
