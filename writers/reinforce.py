"""Dataset Reinforcement writers: add a ReinforcementField (stored augmentations + teacher top-k)
to an existing .beton file, written as a NEW file with the input's fields copied byte for byte
(images keep their stored JPEG/raw bytes and original-size side table; nothing is re-encoded).

- ``reinforce(data_path, teacher, out, num_augs, top_k, ...)``: draws NS RandomResizedCrop +
  flip augmentations per image (and optionally mixup/cutmix), renders each exactly as
  ``fastdata.ops.replay.ReplayedCrop`` will replay it, runs the teacher on the batch and keeps
  its top-k softmax probabilities.
- ``import_imagenet_plus(data_path, records_dir, out, ...)``: converts ml-dr's released
  ``<records_dir>/<index>.pth.tar`` files (``torch.save((index, [record, ...]))``).
"""
from __future__ import annotations

import argparse
import importlib
import math
import os
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional, Sequence

import numpy as np
from numba import njit

from fastdata.fields import RGBImageField
from fastdata.fields.base import Encoded, Field
from fastdata.fields.reinforce import ReinforcementField, record_dtype
from fastdata.ops.crop_params import random_resized_crop_box
from fastdata.reader import Reader
from fastdata.rng import OP_CROP, OP_FLIP, OP_MIX, make_key, uniform
from fastdata.writer import DatasetWriter, default_workers

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PARTNER_OP = 16          # partner boxes/flips use OP_CROP + 16 and OP_FLIP + 16
SUPPORTED_TRANSFORMS = ("random_resized_crop", "random_horizontal_flip", "rand_augment",
                        "random_erase", "mixup", "cutmix")


# -- copying fields without re-encoding -----------------------------------------------------------
class CopiedField(Field):
    """A field of an open Reader written again as stored: same type id, arguments, metadata and
    payload bytes.  Values are sample indices of the input file."""

    side_table_dtype = None

    def __init__(self, reader: Reader, name: str):
        self.reader, self.name = reader, name
        self.inner = reader.fields[name]
        self.TYPE_ID = self.inner.TYPE_ID
        self.side_table_dtype = self.inner.side_table_dtype
        self.k = reader.field_names.index(name)
        self.table = reader.side_table(name)

    @property
    def metadata_dtype(self) -> np.dtype:
        return self.inner.metadata_dtype

    def to_arguments(self, side_table=None) -> np.ndarray:
        return self.inner.to_arguments(side_table)

    def encode(self, value: Any, index: int) -> Encoded:
        i = int(value)
        record = self.reader.metadata[i][f"f{self.k}"]
        payload = self.reader.payload(i, self.name)
        side = None
        if self.side_table_dtype is not None:
            if self.table is not None:
                side = tuple(self.table[i].tolist())
            elif isinstance(self.inner, RGBImageField):
                side = (int(record["width"]), int(record["height"]))
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


def _copied_fields(reader: Reader, drop: Sequence[str] = ()) -> dict:
    return {name: CopiedField(reader, name) for name in reader.field_names if name not in drop}


def _page_size(reader: Reader, field: ReinforcementField) -> int:
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


# -- drawing augmentations ------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _draw_crops(seed, indices, augs, op, heights, widths, boxes, flips):
    """RandomResizedCrop(scale 0.08-1, ratio 3/4-4/3) boxes and p=0.5 flips: record (index, aug)
    draws from key (seed, epoch=aug, index, op) / (seed, aug, index, op + 1)."""
    lo, hi = math.log(3 / 4), math.log(4 / 3)
    for k in range(len(indices)):
        key = make_key(seed, augs[k], indices[k], op)
        b = random_resized_crop_box(key, heights[k], widths[k], 0.08, 1.0, lo, hi)
        boxes[k, 0], boxes[k, 1], boxes[k, 2], boxes[k, 3] = b
        flips[k] = uniform(make_key(seed, augs[k], indices[k], op + 1), 0) < 0.5


class Augmenter:
    """The NS augmentations of each image, a pure function of (seed, image index).

    Crops/flips: fastdata.rng keys (seed, aug number, index, OP_CROP / OP_FLIP); the partner's
    with OP_CROP + 16 / OP_FLIP + 16.  Mixing (off unless mixup_p or cutmix_p > 0): drawn from
    ``numpy.random.default_rng((seed, OP_MIX, index))``; per record, mixup with probability
    mixup_p (lambda ~ Beta(mixup_alpha, mixup_alpha) / 2, ml-dr's div_by=2) and independently
    cutmix with probability cutmix_p (lambda ~ Beta(cutmix_alpha, cutmix_alpha), timm's box, lambda
    corrected to the box area); one partner, uniform over the other images."""

    def __init__(self, original: np.ndarray, num_augs: int, top_k: int, output_size: tuple,
                 seed: int = 0, mixup_p: float = 0.0, mixup_alpha: float = 1.0,
                 cutmix_p: float = 0.0, cutmix_alpha: float = 1.0):
        for name, p in (("mixup_p", mixup_p), ("cutmix_p", cutmix_p)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        if (mixup_p or cutmix_p) and len(original) < 2:
            raise ValueError("mixing needs at least two images")
        self.original = original
        self.num_augs, self.top_k, self.output_size = num_augs, top_k, output_size
        self.seed = seed
        self.mixup_p, self.mixup_alpha = float(mixup_p), float(mixup_alpha)
        self.cutmix_p, self.cutmix_alpha = float(cutmix_p), float(cutmix_alpha)
        self.dtype = record_dtype(top_k)

    def _crops(self, indices: np.ndarray, augs: np.ndarray, op: int):
        n = len(indices)
        boxes = np.empty((n, 4), np.int64)
        flips = np.empty(n, np.bool_)
        hw = self.original[indices]
        _draw_crops(self.seed, indices, augs, op, np.ascontiguousarray(hw[:, 0]),
                    np.ascontiguousarray(hw[:, 1]), boxes, flips)
        return boxes, flips

    def records(self, index: int) -> np.ndarray:
        """The NS records of image ``index`` (ids/probs zero)."""
        ns = self.num_augs
        recs = np.zeros(ns, dtype=self.dtype)
        idx = np.full(ns, index, np.int64)
        augs = np.arange(ns, dtype=np.int64)
        assert OP_FLIP == OP_CROP + 1
        recs["box"], recs["flip"] = self._crops(idx, augs, OP_CROP)
        recs["partner"] = -1
        recs["mixup"] = recs["cutmix"] = np.nan
        if not (self.mixup_p or self.cutmix_p):
            return recs
        g = np.random.default_rng((self.seed, OP_MIX, index))
        n = len(self.original)
        partner = g.integers(0, n - 1, ns)
        partner += partner >= index
        do_mix = g.random(ns) < self.mixup_p
        lam_mix = g.beta(self.mixup_alpha, self.mixup_alpha, ns) / 2
        do_cut = g.random(ns) < self.cutmix_p
        lam_cut = g.beta(self.cutmix_alpha, self.cutmix_alpha, ns)
        cy, cx = g.random(ns), g.random(ns)
        h, w = self.output_size
        cut_h = (h * np.sqrt(1 - lam_cut)).astype(np.int64)
        cut_w = (w * np.sqrt(1 - lam_cut)).astype(np.int64)
        cy, cx = (cy * h).astype(np.int64), (cx * w).astype(np.int64)
        r1, r2 = np.clip(cy - cut_h // 2, 0, h), np.clip(cy + cut_h // 2, 0, h)
        c1, c2 = np.clip(cx - cut_w // 2, 0, w), np.clip(cx + cut_w // 2, 0, w)
        lam_cut = 1 - (r2 - r1) * (c2 - c1) / (h * w)
        mixed = do_mix | do_cut
        pboxes, pflips = self._crops(partner.astype(np.int64), augs, OP_CROP + PARTNER_OP)
        recs["partner"] = np.where(mixed, partner, -1)
        recs["partner_box"] = np.where(mixed[:, None], pboxes, 0)
        recs["partner_flip"] = mixed & pflips
        recs["mixup"] = np.where(do_mix, lam_mix, np.nan)
        recs["cutmix"] = np.where(do_cut, lam_cut, np.nan)
        recs["cutmix_box"] = np.where(do_cut[:, None], np.stack([r1, c1, r2, c2], 1), 0)
        return recs


# -- rendering ------------------------------------------------------------------------------------
class Renderer:
    """Renders records exactly as ReplayedCrop replays them (same decoder object and kernel)."""

    def __init__(self, reader: Reader, image: str, output_size: tuple, batch_size: int,
                 num_workers: int):
        from fastdata.ops.replay import ReplayedCrop
        self.decoder = ReplayedCrop(output_size)
        self.decoder.bind_image(reader, image, reader.field_names.index(image))
        self.decoder.batch_size = batch_size
        self.num_workers = num_workers
        self.pool = ThreadPoolExecutor(num_workers, thread_name_prefix="fastdata-reinforce")
        self.local = threading.local()
        self.states: list = []
        self.lock = threading.Lock()

    def _state(self) -> dict:
        state = getattr(self.local, "state", None)
        if state is None:
            state = self.local.state = self.decoder.make_worker_state()
            with self.lock:
                self.states.append(state)
        return state

    def render(self, indices: np.ndarray, recs: np.ndarray, out: np.ndarray) -> np.ndarray:
        """uint8 [n, H, W, 3]: record recs[k] of sample indices[k], for each k."""
        from fastdata.ops.base import BatchContext
        ctx = BatchContext(indices=np.ascontiguousarray(indices, np.int64), epoch=0, seed=0,
                           slot=0)
        self.decoder.apply_records(ctx, recs)
        n = len(indices)
        step = max(1, -(-n // self.num_workers))
        futures = [self.pool.submit(lambda s: self.decoder.decode_range(
            ctx, s, min(s + step, n), out, self._state()), s) for s in range(0, n, step)]
        for f in futures:
            f.result()
        return out[:n]

    def close(self) -> None:
        self.pool.shutdown()
        for state in self.states:
            self.decoder.release_worker_state(state)


def resolve_teacher(teacher: Any) -> Callable:
    """A callable from a torch.nn.Module, a callable, or a 'module:attribute' string (an
    nn.Module subclass found there is instantiated with no arguments)."""
    import torch
    if isinstance(teacher, str):
        module, sep, attr = teacher.partition(":")
        if not sep or not module or not attr:
            raise ValueError(f"teacher must be 'module:callable', got {teacher!r}")
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        teacher = obj
        if isinstance(teacher, type) and issubclass(teacher, torch.nn.Module):
            teacher = teacher()
    if not callable(teacher):
        raise TypeError(f"teacher {teacher!r} is not callable")
    return teacher


def _source_image(reader: Reader, image: Optional[str], field_name: str
                  ) -> tuple[str, np.ndarray]:
    """(image field name, original sizes [n, 2]) of the file a reinforcement field is added to;
    ValueError if it already has ``field_name`` or the image field is missing or ambiguous."""
    from fastdata.ops.replay import original_and_stored_sizes
    if field_name in reader.fields:
        raise ValueError(f"{reader.path} already has a field {field_name!r}")
    if image is None:
        names = [n for n in reader.field_names if isinstance(reader.fields[n], RGBImageField)]
        if len(names) != 1:
            raise ValueError(f"{reader.path}: name the image field (image fields: {names})")
        image = names[0]
    elif image not in reader.fields or not isinstance(reader.fields[image], RGBImageField):
        raise ValueError(f"{reader.path}: no image field {image!r}")
    original, _ = original_and_stored_sizes(reader, image)
    return image, original


def reinforce(data_path: str, teacher: Any, out: str, num_augs: int, top_k: int,
              batch_size: int = 64, device: Optional[str] = None, seed: int = 0,
              mixup_p: float = 0.0, mixup_alpha: float = 1.0, cutmix_p: float = 0.0,
              cutmix_alpha: float = 1.0, output_size: Any = 224, image: Optional[str] = None,
              field_name: str = "reinforce", num_workers: int = -1, progress: bool = True,
              tmp_dir: Optional[str] = None):
    """Write ``out``: the fields of ``data_path`` copied as stored, plus ReinforcementField
    ``field_name`` with ``num_augs`` augmentations per image and the teacher's ``top_k``.

    teacher: a torch.nn.Module or callable mapping float32 [B, 3, H, W] (ImageNet mean/std
    normalised) to logits [B, C], or a 'module:callable' string; softmax is applied here.
    Returns the DatasetWriter's WriteReport."""
    import torch
    from tqdm.auto import tqdm
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    field = ReinforcementField(num_augs, top_k, size)
    model = resolve_teacher(teacher)
    if isinstance(model, torch.nn.Module):
        model = model.to(device).eval()
    workers = default_workers() if num_workers in (-1, None) else int(num_workers)
    reader = Reader(data_path)
    try:
        image, original = _source_image(reader, image, field_name)
        aug = Augmenter(original, num_augs, top_k, size, seed, mixup_p, mixup_alpha,
                        cutmix_p, cutmix_alpha)
        n = len(reader)
        tmp = tempfile.TemporaryDirectory(dir=tmp_dir or os.path.dirname(os.path.abspath(out)))
        ids_all = np.lib.format.open_memmap(os.path.join(tmp.name, "ids.npy"), "w+", np.int16,
                                            (n, num_augs, top_k))
        probs_all = np.lib.format.open_memmap(os.path.join(tmp.name, "probs.npy"), "w+",
                                              np.float16, (n, num_augs, top_k))
        renderer = Renderer(reader, image, size, batch_size, workers)
        mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
        buf = np.empty((batch_size, *size, 3), np.uint8)
        chunk = max(1, -(-4 * batch_size // num_augs))
        bar = tqdm(total=n * num_augs, desc="teacher", unit="crop", disable=not progress)
        try:
            for s in range(0, n, chunk):
                e = min(n, s + chunk)
                recs = np.concatenate([aug.records(i) for i in range(s, e)])
                flat_idx = np.repeat(np.arange(s, e, dtype=np.int64), num_augs)
                ids_out = np.empty((len(recs), top_k), np.int16)
                probs_out = np.empty((len(recs), top_k), np.float16)
                for b in range(0, len(recs), batch_size):
                    sl = slice(b, min(b + batch_size, len(recs)))
                    pixels = renderer.render(flat_idx[sl], recs[sl], buf)
                    x = torch.from_numpy(pixels).to(device).permute(0, 3, 1, 2).float()
                    x = (x / 255.0 - mean) / std
                    with torch.inference_mode():
                        logits = model(x)
                    logits = torch.as_tensor(logits).float()
                    if logits.dim() != 2 or logits.shape[0] != x.shape[0]:
                        raise ValueError(f"teacher returned shape {tuple(logits.shape)}, expected "
                                         f"[{x.shape[0]}, num_classes]")
                    if logits.shape[1] < top_k or logits.shape[1] > 32768:
                        raise ValueError(f"teacher has {logits.shape[1]} classes: need top_k "
                                         f"{top_k} <= classes <= 32768")
                    p, i = torch.softmax(logits, dim=1).topk(top_k, dim=1)
                    ids_out[sl] = i.cpu().numpy()
                    probs_out[sl] = p.cpu().numpy()
                    bar.update(sl.stop - sl.start)
                ids_all[s:e] = ids_out.reshape(e - s, num_augs, top_k)
                probs_all[s:e] = probs_out.reshape(e - s, num_augs, top_k)
        finally:
            bar.close()
            renderer.close()

        fields = _copied_fields(reader)
        fields[field_name] = field

        def load(i: int) -> tuple:
            recs = aug.records(i)
            recs["ids"], recs["probs"] = ids_all[i], probs_all[i]
            return (*([i] * (len(fields) - 1)), recs)

        try:
            return DatasetWriter(out, fields, page_size=_page_size(reader, field),
                                 num_workers=workers, progress=progress).write(n, load)
        finally:
            del ids_all, probs_all
            tmp.cleanup()
    finally:
        reader.close()


# -- ImageNet+ import -----------------------------------------------------------------------------
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
        image, original = _source_image(reader, image, field_name)
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
        fields = _copied_fields(reader)
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

        workers = default_workers() if num_workers in (-1, None) else int(num_workers)
        return DatasetWriter(out, fields, page_size=_page_size(reader, field),
                             num_workers=workers, progress=progress).write(n, load)
    finally:
        reader.close()


# -- command line ---------------------------------------------------------------------------------
def add_subcommand(subparsers) -> argparse.ArgumentParser:
    """Add ``reinforce`` to the ``fastdata write`` sources."""
    p = subparsers.add_parser(
        "reinforce", help="add Dataset Reinforcement records (teacher top-k) to a .beton file",
        description="Write a new .beton file with --data's fields (copied, not re-encoded) plus a "
                    "ReinforcementField: either generated with --teacher, or imported from "
                    "ml-dr's ImageNet+ records with --imagenet-plus DIR.")
    p.add_argument("--data", required=True, metavar="FILE", dest="input",
                   help="the .beton file to reinforce (fields image and label)")
    p.add_argument("--out", required=True, help="the .beton file to write")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--teacher", metavar="MODULE:CALLABLE",
                     help="logits = CALLABLE(float [B,3,H,W] normalised batch)")
    src.add_argument("--imagenet-plus", metavar="DIR",
                     help="folder of ml-dr's <index>.pth.tar records")
    p.add_argument("--num-augs", type=int, default=None, metavar="NS",
                   help="augmentations per image (required with --teacher)")
    p.add_argument("--top-k", type=int, default=None, metavar="K",
                   help="teacher outputs kept (default: 10 with --teacher, from the records "
                        "with --imagenet-plus)")
    p.add_argument("--transforms", default="random_resized_crop,random_horizontal_flip",
                   help="--imagenet-plus: comma-separated order of the entries of P")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default=None, help="teacher device (default: cuda if available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-size", type=int, default=224)
    p.add_argument("--mixup-p", type=float, default=0.0)
    p.add_argument("--mixup-alpha", type=float, default=1.0)
    p.add_argument("--cutmix-p", type=float, default=0.0)
    p.add_argument("--cutmix-alpha", type=float, default=1.0)
    p.add_argument("--image-field", default=None, help="default: the only image field")
    p.add_argument("--field-name", default="reinforce")
    p.add_argument("--workers", type=int, default=-1)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``fastdata write reinforce``; ValueError/OSError propagate to the CLI's handler."""
    if args.imagenet_plus:
        report = import_imagenet_plus(
            args.input, args.imagenet_plus, args.out,
            transforms=[t.strip() for t in args.transforms.split(",") if t.strip()],
            num_augs=args.num_augs, top_k=args.top_k, output_size=args.output_size,
            image=args.image_field, field_name=args.field_name, num_workers=args.workers,
            progress=not args.quiet)
    else:
        if args.num_augs is None:
            raise ValueError("--teacher needs --num-augs")
        report = reinforce(args.input, args.teacher, args.out, args.num_augs,
                           args.top_k or 10, batch_size=args.batch_size, device=args.device,
                           seed=args.seed, mixup_p=args.mixup_p, mixup_alpha=args.mixup_alpha,
                           cutmix_p=args.cutmix_p, cutmix_alpha=args.cutmix_alpha,
                           output_size=args.output_size, image=args.image_field,
                           field_name=args.field_name, num_workers=args.workers,
                           progress=not args.quiet)
    print(f"wrote {report.num_written} samples to {report.path} "
          f"({report.file_size / 1e6:.1f} MB) in {report.seconds:.1f} s")
    return 0
