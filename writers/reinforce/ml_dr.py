"""Importing ml-dr's released ImageNet+ records (``<records_dir>/<index>.pth.tar`` files, each
``torch.save((index, [record, ...]))``) as a ReinforcementField added to an existing file."""
from __future__ import annotations

import os
from typing import Any, Optional, Sequence

import numpy as np

from fastdata.fields.reinforce import ReinforcementField
from fastdata.reader import Reader
from fastdata.writer import DatasetWriter

from .copied import copied_fields, page_size_for, source_image

SUPPORTED_TRANSFORMS = ("random_resized_crop", "random_horizontal_flip", "rand_augment",
                        "random_erase", "mixup", "cutmix")


def _box(value: Any, what: str) -> tuple:
    try:
        box = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: expected (i, j, h, w), got {value!r}") from None
    if len(box) != 4 or any(float(v) != int(v) for v in value):
        raise ValueError(f"{what}: expected 4 integers (i, j, h, w), got {value!r}")
    return box


def _pair(value: Any, mixed: bool, what: str) -> tuple:
    """(params of image 1, params of image 2 or None) of one P entry."""
    if not mixed:
        return value, None
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"{what}: a mixed record needs [params_img1, params_img2], got "
                         f"{value!r}")
    return value[0], value[1]


def parse_ml_dr_record(record: Any, transforms: Sequence[str], top_k: int,
                       where: str) -> dict:
    """One ml-dr record {'params': P, 'prob': (probs, ids)} as a ReinforcementField dict."""
    if not isinstance(record, dict) or "params" not in record or "prob" not in record:
        raise ValueError(f"{where}: expected a dict with 'params' and 'prob'")
    params = record["params"]
    mixing = "mixup" in transforms or "cutmix" in transforms
    expected = len(transforms) + mixing
    if not isinstance(params, (list, tuple)) or len(params) != expected:
        raise ValueError(f"{where}: params should be a list of {expected} entries ("
                         f"{'[id2] + ' if mixing else ''}{list(transforms)}), got {params!r}")
    id2 = params[0] if mixing else None
    entries = dict(zip(transforms, params[1:] if mixing else params))
    mixed = id2 is not None
    out: dict = {"flip": False}
    for name in ("rand_augment", "random_erase"):
        if name in entries:
            p1, p2 = _pair(entries[name], mixed, f"{where}: {name}")
            if p1 is not None or p2 is not None:
                raise ValueError(f"{where}: has {name} parameters; this version replays crop, "
                                 f"flip, mixup and cutmix only (use an RRC or +M* variant)")
    p1, p2 = _pair(entries["random_resized_crop"], mixed, f"{where}: random_resized_crop")
    out["box"] = _box(p1, f"{where}: random_resized_crop")
    if mixed:
        out["partner_box"] = _box(p2, f"{where}: random_resized_crop of image 2")
    if "random_horizontal_flip" in entries:
        f1, f2 = _pair(entries["random_horizontal_flip"], mixed, f"{where}: flip")
        if not isinstance(f1, (bool, int, np.bool_)) or (mixed and not isinstance(
                f2, (bool, int, np.bool_))):
            raise ValueError(f"{where}: random_horizontal_flip must be a bool")
        out["flip"], out["partner_flip"] = bool(f1), bool(f2) if mixed else False
    lam = entries.get("mixup")
    cut = entries.get("cutmix")
    if lam is not None:
        out["mixup"] = float(lam)
    if cut is not None:
        if not isinstance(cut, (list, tuple)) or len(cut) != 5:
            raise ValueError(f"{where}: cutmix must be [lam, r1, c1, r2, c2], got {cut!r}")
        out["cutmix"] = float(cut[0])
        out["cutmix_box"] = tuple(int(v) for v in cut[1:])
    if (lam is not None or cut is not None):
        if not mixed:
            raise ValueError(f"{where}: mixup/cutmix parameters but id2 is None")
        out["partner"] = int(id2)
    else:
        out.pop("partner_box", None)
        out["partner_flip"] = False
    prob = record["prob"]
    if not isinstance(prob, (list, tuple)) or len(prob) != 2:
        raise ValueError(f"{where}: 'prob' must be (probs, ids)")
    probs, ids = (np.asarray(v).reshape(-1) for v in prob)
    if probs.size != top_k or ids.size != top_k:
        raise ValueError(f"{where}: expected top-{top_k} (probs, ids), got {probs.size} and "
                         f"{ids.size}")
    out["probs"], out["ids"] = probs.astype(np.float64), ids
    return out


def _load_ml_dr(path: str, index: int) -> list:
    import torch
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"{path}: missing (every sample index needs its record file)") from None
    except Exception as err:   # unpickling refused by weights_only, or a corrupt file
        raise ValueError(f"{path}: cannot load with weights_only=True: "
                         f"{type(err).__name__}: {err}") from None
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError(f"{path}: expected (index, [record, ...])")
    stored, records = data
    try:
        stored = int(stored)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: index {stored!r} is not an integer") from None
    if stored != index:
        raise ValueError(f"{path}: holds index {stored}, expected {index}")
    if not isinstance(records, (list, tuple)) or not records:
        raise ValueError(f"{path}: expected a non-empty list of records")
    return list(records)


def import_imagenet_plus(data_path: str, records_dir: str, out: str,
                         transforms: Sequence[str] = ("random_resized_crop",
                                                      "random_horizontal_flip"),
                         num_augs: Optional[int] = None, top_k: Optional[int] = None,
                         output_size: Any = 224, image: Optional[str] = None,
                         field_name: str = "reinforce", num_workers: int = -1,
                         progress: bool = True):
    """Write ``out``: the fields of ``data_path`` (in ImageFolder order) copied as stored, plus
    ReinforcementField ``field_name`` from ml-dr's ``<records_dir>/<index>.pth.tar`` files.

    transforms: the parametrised transforms of the generation config, in ml-dr's order, i.e.
    the entries of each compressed P after the leading id2 (present when 'mixup' or 'cutmix' is
    listed).  Names: random_resized_crop (required), random_horizontal_flip, rand_augment,
    random_erase, mixup, cutmix.  RRC-only ImageNet+: the default; '+M*': add 'mixup', 'cutmix';
    '+RA/RE' configs list 'rand_augment', 'random_erase' (their records are refused unless every
    entry is None).  num_augs / top_k default to those of record file 0.  Every file is loaded
    with ``torch.load(..., weights_only=True)`` and checked (index, NS, k, boxes inside the
    original image, partner in range); the first bad file stops the write, named."""
    transforms = list(transforms)
    unknown = [t for t in transforms if t not in SUPPORTED_TRANSFORMS]
    if unknown:
        raise ValueError(f"unknown transforms {unknown}: supported {list(SUPPORTED_TRANSFORMS)}")
    if "random_resized_crop" not in transforms or len(set(transforms)) != len(transforms):
        raise ValueError(f"transforms must include random_resized_crop once, got {transforms}")
    transforms = sorted(transforms, key=SUPPORTED_TRANSFORMS.index)
    if not os.path.isdir(records_dir):
        raise ValueError(f"records folder {records_dir} does not exist")
    reader = Reader(data_path)
    try:
        image, original = source_image(reader, image, field_name)
        n = len(reader)
        path_of = lambda i: os.path.join(records_dir, f"{i}.pth.tar")  # noqa: E731
        if num_augs is None or top_k is None:
            first = _load_ml_dr(path_of(0), 0)
            num_augs = num_augs or len(first)
            if top_k is None:
                rec = first[0]
                try:
                    top_k = len(rec["prob"][1])
                except (TypeError, KeyError, IndexError):
                    raise ValueError(f"{path_of(0)}: record 0 has no 'prob' (probs, ids)") from None
        size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
        field = ReinforcementField(num_augs, top_k, size)
        fields = copied_fields(reader)
        fields[field_name] = field

        def load(i: int) -> tuple:
            path = path_of(i)
            records = _load_ml_dr(path, i)
            if len(records) != num_augs:
                raise ValueError(f"{path}: {len(records)} records, expected {num_augs}")
            dicts = [parse_ml_dr_record(r, transforms, top_k, f"{path}: record {j}")
                     for j, r in enumerate(records)]
            try:
                recs = field.as_records(dicts)
            except ValueError as err:
                raise ValueError(f"{path}: {err}") from None
            box = recs["box"].astype(np.int64)
            h, w = original[i]
            bad = (box[:, 0] + box[:, 2] > h) | (box[:, 1] + box[:, 3] > w)
            if bad.any():
                j = int(np.argmax(bad))
                raise ValueError(f"{path}: record {j}: crop {tuple(box[j])} is outside the "
                                 f"{w}x{h} original image")
            partner = recs["partner"].astype(np.int64)
            for j in np.flatnonzero(partner >= 0):
                p = int(partner[j])
                if p >= n:
                    raise ValueError(f"{path}: record {j}: id2 {p} >= number of samples {n}")
                pb, (ph, pw) = recs["partner_box"][j].astype(np.int64), original[p]
                if pb[0] + pb[2] > ph or pb[1] + pb[3] > pw:
                    raise ValueError(f"{path}: record {j}: crop of image 2 {tuple(pb)} is "
                                     f"outside its {pw}x{ph} original image")
                cb = recs["cutmix_box"][j]
                if not np.isnan(recs["cutmix"][j]) and (cb[2] > size[0] or cb[3] > size[1]):
                    raise ValueError(f"{path}: record {j}: cutmix box {tuple(cb)} outside the "
                                     f"{size[0]}x{size[1]} output")
            return (*([i] * (len(fields) - 1)), recs)

        return DatasetWriter(out, fields, page_size=page_size_for(reader, field),
                             num_workers=num_workers, progress=progress).write(n, load)
    finally:
        reader.close()
