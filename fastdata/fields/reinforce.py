"""ReinforcementField (type 101): Dataset Reinforcement (ImageNet+, apple/ml-dr) records.

Per sample, ``num_augs`` (NS) stored augmentations, each the parameters of one augmented view
and the teacher's top-k output on exactly that view.  One record (packed, little-endian):

==============  ============  ===============================================================
name            dtype         meaning
==============  ============  ===============================================================
box             int32[4]      crop (top, left, height, width) in ORIGINAL image pixels
flip            uint8         1: mirrored left-right after the crop
partner         int32         sample index of the mixing partner, -1: no mixing
partner_box     int32[4]      the partner's crop, in the partner's ORIGINAL image pixels
partner_flip    uint8         the partner's flip bit
mixup           float32       mixup lambda: ``lam * x + (1 - lam) * x2``; NaN: no mixup
cutmix          float32       cutmix lambda (informative: the teacher saw the pasted image);
                              NaN: no cutmix
cutmix_box      int16[4]      (r1, c1, r2, c2): rows r1:r2, columns c1:c2 of the OUTPUT image
                              take the partner's pixels
ids             int16[k]      the teacher's top-k class ids (any order, distinct)
probs           float16[k]    their probabilities
==============  ============  ===============================================================

Payload: the NS records of a sample (``NS * (54 + 4k)`` bytes); metadata: its pointer.  The
descriptor arguments hold NS, k and the output size the records were made for (cutmix boxes are
in its pixels).  Replay (fastdata.ops.replay) supports crop, flip, mixup and cutmix; records that
would need RandAugment or random erasing are rejected when written.

Values to encode: a structured array of ``record_dtype(k)`` of length NS, or a list of NS dicts
with keys ``box`` (4 ints), ``flip`` (bool, default False), ``ids`` and ``probs`` (k each; or
``prob`` = (probs, ids), ml-dr's order) and optionally ``partner`` (int or None),
``partner_box``, ``partner_flip``, ``mixup`` (float or None), ``cutmix`` (float or None),
``cutmix_box`` (r1, c1, r2, c2).  Keys ``rand_augment`` / ``random_erase`` with a value other
than None are refused.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from ..constants import MAX_CLASS_ID, MAX_TOP_K
from ..format import FormatError
from .base import Encoded, accepts_ffcv_call, FixedSizeField, pack_arguments, unpack_arguments

MAX_AUGS = 1 << 16
_ARGS = np.dtype([("num_augs", "<u4"), ("top_k", "<u4"), ("out_h", "<u4"), ("out_w", "<u4")])
_KNOWN_KEYS = {"box", "flip", "partner", "partner_box", "partner_flip", "mixup", "cutmix",
               "cutmix_box", "ids", "probs", "prob", "rand_augment", "random_erase"}
UNSUPPORTED = ("rand_augment", "random_erase")


def record_dtype(top_k: int) -> np.dtype:
    """The packed little-endian dtype of one stored augmentation with ``top_k`` teacher outputs."""
    return np.dtype([("box", "<i4", (4,)), ("flip", "u1"), ("partner", "<i4"),
                     ("partner_box", "<i4", (4,)), ("partner_flip", "u1"), ("mixup", "<f4"),
                     ("cutmix", "<f4"), ("cutmix_box", "<i2", (4,)), ("ids", "<i2", (top_k,)),
                     ("probs", "<f2", (top_k,))])


class UnsupportedAugmentation(ValueError):
    """A record needs a transform that replay does not implement (RandAugment, random erasing)."""


def _optional_float(value: Any) -> float:
    return math.nan if value is None else float(value)


def records_from_dicts(values: Any, num_augs: int, top_k: int) -> np.ndarray:
    """The structured array of a list of NS dicts (see the module docstring)."""
    out = np.zeros(num_augs, dtype=record_dtype(top_k))
    if len(values) != num_augs:
        raise ValueError(f"expected {num_augs} augmentation records, got {len(values)}")
    for j, rec in enumerate(values):
        if not isinstance(rec, dict):
            raise TypeError(f"augmentation {j}: expected a dict, got {type(rec).__name__}")
        unknown = set(rec) - _KNOWN_KEYS
        if unknown:
            raise ValueError(f"augmentation {j}: unknown keys {sorted(unknown)}")
        for key in UNSUPPORTED:
            if rec.get(key) is not None:
                raise UnsupportedAugmentation(
                    f"augmentation {j} has {key} parameters: this version replays crop, flip, "
                    f"mixup and cutmix only")
        if "box" not in rec:
            raise ValueError(f"augmentation {j}: missing 'box'")
        out[j]["box"] = np.asarray(rec["box"], dtype=np.int64).reshape(4)
        out[j]["flip"] = bool(rec.get("flip", False))
        partner = rec.get("partner")
        out[j]["partner"] = -1 if partner is None else int(partner)
        if rec.get("partner_box") is not None:
            out[j]["partner_box"] = np.asarray(rec["partner_box"], dtype=np.int64).reshape(4)
        out[j]["partner_flip"] = bool(rec.get("partner_flip", False))
        out[j]["mixup"] = _optional_float(rec.get("mixup"))
        out[j]["cutmix"] = _optional_float(rec.get("cutmix"))
        if rec.get("cutmix_box") is not None:
            out[j]["cutmix_box"] = np.asarray(rec["cutmix_box"], dtype=np.int64).reshape(4)
        if "prob" in rec:
            probs, ids = rec["prob"]
        elif "ids" in rec and "probs" in rec:
            ids, probs = rec["ids"], rec["probs"]
        else:
            raise ValueError(f"augmentation {j}: missing the teacher output ('ids' and 'probs', "
                             f"or 'prob')")
        ids = np.asarray(ids).reshape(-1)
        probs = np.asarray(probs, dtype=np.float64).reshape(-1)
        if ids.shape != (top_k,) or probs.shape != (top_k,):
            raise ValueError(f"augmentation {j}: expected {top_k} ids and probabilities, got "
                             f"{ids.size} and {probs.size}")
        if np.any(ids != np.round(ids)) or np.any(ids < 0) or np.any(ids > MAX_CLASS_ID):
            raise ValueError(f"augmentation {j}: class ids must be integers in [0, "
                             f"{MAX_CLASS_ID}]")
        out[j]["ids"] = ids.astype(np.int64)
        out[j]["probs"] = probs
    return out


def first_bad_record(recs: np.ndarray) -> Optional[tuple[int, str]]:
    """(position, reason) of the first bad record of a flat structured array, else None.  Checks
    what does not depend on the file: signs, sizes, lambdas, ids, and that mixing has a partner
    and a partner has mixing."""
    box, pbox = recs["box"].astype(np.int64), recs["partner_box"].astype(np.int64)
    partner = recs["partner"].astype(np.int64)
    has = partner >= 0
    mixup, cutmix = recs["mixup"].astype(np.float64), recs["cutmix"].astype(np.float64)
    mixes = ~np.isnan(mixup) | ~np.isnan(cutmix)
    cbox = recs["cutmix_box"].astype(np.int64)
    probs = recs["probs"].astype(np.float64).reshape(len(recs), -1)
    ids = np.sort(recs["ids"].astype(np.int64).reshape(len(recs), -1), axis=1)
    checks = [
        ((box[:, :2] < 0).any(1) | (box[:, 2:] <= 0).any(1),
         "crop box needs top, left >= 0 and height, width > 0"),
        (partner < -1, "partner index must be -1 (none) or a sample index"),
        (has & ((pbox[:, :2] < 0).any(1) | (pbox[:, 2:] <= 0).any(1)),
         "partner crop box needs top, left >= 0 and height, width > 0"),
        (~np.isnan(mixup) & ~((mixup >= 0) & (mixup <= 1)), "mixup lambda must be in [0, 1]"),
        (~np.isnan(cutmix) & ~((cutmix >= 0) & (cutmix <= 1)), "cutmix lambda must be in [0, 1]"),
        (mixes & ~has, "mixup/cutmix without a partner"),
        (has & ~mixes, "a partner but neither mixup nor cutmix"),
        (~np.isnan(cutmix) & ((cbox[:, :2] < 0).any(1) | (cbox[:, 2] < cbox[:, 0])
                              | (cbox[:, 3] < cbox[:, 1])),
         "cutmix box (r1, c1, r2, c2) needs 0 <= r1 <= r2 and 0 <= c1 <= c2"),
        ((~np.isfinite(probs) | (probs < 0)).any(1),
         "probabilities must be finite and non-negative"),
        ((ids < 0).any(1), "class ids must be non-negative"),
        ((ids[:, 1:] == ids[:, :-1]).any(1), "class ids must be distinct"),
    ]
    for mask, what in checks:
        if mask.any():
            return int(np.argmax(mask)), what
    return None


def check_records(recs: np.ndarray, where: str = "") -> None:
    """ValueError naming the first bad record of a flat structured array (see first_bad_record)."""
    bad = first_bad_record(recs)
    if bad is not None:
        prefix = f"{where}: " if where else ""
        raise ValueError(f"{prefix}augmentation {bad[0]}: {bad[1]}")


class ReinforcementField(FixedSizeField):
    """``num_augs`` stored augmentations with the teacher's ``top_k`` outputs per sample; see the
    module docstring.  ``output_size`` (height, width) is the size of the views the teacher saw
    (the space of cutmix boxes)."""

    TYPE_ID = 101

    def __init__(self, num_augs: int, top_k: int, output_size: Any = 224):
        if not 1 <= int(num_augs) <= MAX_AUGS:
            raise ValueError(f"num_augs must be in [1, {MAX_AUGS}], got {num_augs}")
        if not 1 <= int(top_k) <= MAX_TOP_K:
            raise ValueError(f"top_k must be in [1, {MAX_TOP_K}], got {top_k}")
        if isinstance(output_size, (int, np.integer)):
            output_size = (output_size, output_size)
        self.output_size = tuple(int(s) for s in output_size)
        if len(self.output_size) != 2 or min(self.output_size) <= 0:
            raise ValueError(f"output_size must be positive (height, width), got {output_size}")
        self.num_augs, self.top_k = int(num_augs), int(top_k)
        self.dtype = record_dtype(self.top_k)
        self.record_size = self.dtype.itemsize
        self.nbytes = self.num_augs * self.record_size

    def __repr__(self) -> str:
        return (f"ReinforcementField(num_augs={self.num_augs}, top_k={self.top_k}, "
                f"output_size={self.output_size})")

    def to_arguments(self, side_table: Optional[tuple[int, int]] = None) -> np.ndarray:
        args = np.array((self.num_augs, self.top_k, *self.output_size), dtype=_ARGS)
        return pack_arguments(args)

    @classmethod
    def from_arguments(cls, arguments: np.ndarray) -> "ReinforcementField":
        args = unpack_arguments(arguments, _ARGS)
        try:
            return cls(int(args["num_augs"]), int(args["top_k"]),
                       (int(args["out_h"]), int(args["out_w"])))
        except ValueError as err:
            raise FormatError(f"bad reinforcement field arguments: {err}") from None

    def as_records(self, value: Any) -> np.ndarray:
        """The checked structured array of one sample's value (see the module docstring)."""
        if isinstance(value, np.ndarray) and value.dtype.names is not None:
            if value.shape != (self.num_augs,):
                raise ValueError(f"expected {self.num_augs} augmentation records, got shape "
                                 f"{value.shape}")
            names = set(value.dtype.names)
            for key in UNSUPPORTED:
                if key in names:
                    raise UnsupportedAugmentation(
                        f"records have {key} parameters: this version replays crop, flip, "
                        f"mixup and cutmix only")
            missing = {"box", "ids", "probs"} - names
            if missing:
                raise ValueError(f"records lack fields {sorted(missing)}")
            recs = np.zeros(self.num_augs, dtype=self.dtype)
            recs["partner"] = -1
            recs["mixup"] = recs["cutmix"] = np.nan
            for name in self.dtype.names:
                if name in names:
                    recs[name] = value[name]
        elif isinstance(value, (list, tuple)):
            recs = records_from_dicts(value, self.num_augs, self.top_k)
        else:
            raise TypeError(f"expected a list of {self.num_augs} dicts or a structured array, got "
                            f"{type(value).__name__}")
        check_records(recs)
        return recs

    @accepts_ffcv_call
    def encode(self, value: Any, index: int) -> Encoded:
        return Encoded(self.as_records(value).tobytes(), None)


    def decode(self, record: Any, payload: Optional[np.ndarray], side: Any) -> np.ndarray:
        """The sample's NS records, a structured array of ``record_dtype(top_k)``."""
        return np.frombuffer(payload.tobytes(), dtype=self.dtype).copy()
