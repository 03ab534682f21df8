"""Replay of Dataset Reinforcement records (ImageNet+, apple/ml-dr) in the loader.

Pipelines (the image decoder prepares first, so the targets see its choice)::

    Loader(path, pipelines={
        "image": [ReplayedCrop(224, reinforce="reinforce"), ToTensor(), ToTorchImage(), ...],
        "reinforce": [ReplayTargets(num_classes=1000, densify="smooth", image="image")],
        "label": None})

- ``ReplayedCrop`` picks, for each sample, one of its NS stored augmentations uniformly with the
  counter-based RNG keyed (seed, epoch, index, OP_REPLAY); maps its crop box from original to
  stored pixels (edges scaled by stored/original size and rounded half up; at least one pixel);
  decodes it with the stored flip bit through the same Numba kernel as RandomResizedCrop; and, for
  a record with a partner, decodes the partner with ITS stored box and flip (same kernel, in the
  same worker task, no GIL) and mixes: mixup ``floor(lam * x + (1 - lam) * x2 + 0.5)`` in float64
  on uint8 pixels, then cutmix (rows r1:r2, columns c1:c2 take the partner's pixels; boxes are
  rescaled when the output size differs from the field's).
- ``ReplayTargets`` emits float32 [B, num_classes] targets: the densified top-k of the SAME
  chosen record (fastdata.ops.targets.densify: 'smooth', 'zeros' or 'renorm').

Every record is validated once when a decoder is bound (boxes inside the original image,
partner indices in range, cutmix boxes inside the output, class ids < num_classes), so the
kernel never sees a bad offset.  This streams the whole field once per open Reader.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np

from ..fields.reinforce import ReinforcementField, first_bad_record
from ..pixels.mix import mix_range
from ..rng import OP_REPLAY, draws
from ..backends.base import ImageBackend
from .base import BatchContext, Decoder, register_default_decoder
from .crops import CropParams
from .image_decoders import ImageDecoder, RandomHorizontalFlip
from .targets import _MODE_IDS, DENSIFY_MODES, densify

_SUMMARIES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_CHECK_BYTES = 64 << 20


def _summary(reader, reinforce: str, image: str) -> dict:
    """Validate every record of field ``reinforce`` against image field ``image`` (once per
    reader); returns {'max_id': largest class id}.  ValueError naming sample and augmentation."""
    cache = _SUMMARIES.setdefault(reader, {})
    if (reinforce, image) in cache:
        return cache[(reinforce, image)]
    field = reader.fields[reinforce]
    original = reader.image_sizes(image).original
    ptrs = reader.payload_ptrs(reinforce).astype(np.int64)
    n, ns = len(reader), field.num_augs
    out_h, out_w = field.output_size
    chunk = max(1, _CHECK_BYTES // field.nbytes)
    span = np.arange(field.nbytes, dtype=np.int64)
    max_id = -1
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        recs = reader.data[ptrs[s:e, None] + span].view(field.dtype).reshape(-1)
        sample = np.repeat(np.arange(s, e), ns)
        bad = first_bad_record(recs)
        problems = [] if bad is None else [(bad[0], bad[1])]
        box = recs["box"].astype(np.int64)
        orig = original[sample]
        outside = (box[:, 0] + box[:, 2] > orig[:, 0]) | (box[:, 1] + box[:, 3] > orig[:, 1])
        partner = recs["partner"].astype(np.int64)
        has = partner >= 0
        out_of_range = partner >= n
        pbox = recs["partner_box"].astype(np.int64)
        porig = original[np.clip(partner, 0, n - 1)]
        poutside = has & ~out_of_range & ((pbox[:, 0] + pbox[:, 2] > porig[:, 0])
                                          | (pbox[:, 1] + pbox[:, 3] > porig[:, 1]))
        cbox = recs["cutmix_box"].astype(np.int64)
        coutside = ~np.isnan(recs["cutmix"]) & ((cbox[:, 2] > out_h) | (cbox[:, 3] > out_w))
        for mask, what in ((outside, "crop box extends beyond the original image"),
                           (out_of_range, f"partner index >= the number of samples {n}"),
                           (poutside, "partner crop box extends beyond the partner's original "
                                      "image"),
                           (coutside, f"cutmix box extends beyond the {out_h}x{out_w} output")):
            if mask.any():
                problems.append((int(np.argmax(mask)), what))
        if problems:
            j, what = min(problems)
            raise ValueError(f"sample {s + j // ns}, augmentation {j % ns}, field {reinforce!r}: "
                             f"{what}")
        if recs.size:
            max_id = max(max_id, int(recs["ids"].max()))
    cache[(reinforce, image)] = {"max_id": max_id}
    return cache[(reinforce, image)]


def map_boxes(boxes: np.ndarray, original: np.ndarray, stored: np.ndarray) -> np.ndarray:
    """int64[n, 4] boxes in stored pixels from boxes (top, left, height, width) in original
    pixels: each edge scaled by stored/original and rounded half up, at least one pixel, inside
    the image.  The identity when the image was stored at its original size."""
    boxes = boxes.astype(np.float64)
    sy = stored[:, 0] / original[:, 0]
    sx = stored[:, 1] / original[:, 1]
    top = np.floor(boxes[:, 0] * sy + 0.5)
    bottom = np.floor((boxes[:, 0] + boxes[:, 2]) * sy + 0.5)
    left = np.floor(boxes[:, 1] * sx + 0.5)
    right = np.floor((boxes[:, 1] + boxes[:, 3]) * sx + 0.5)
    top = np.clip(top, 0, stored[:, 0] - 1)
    left = np.clip(left, 0, stored[:, 1] - 1)
    bottom = np.clip(bottom, top + 1, stored[:, 0])
    right = np.clip(right, left + 1, stored[:, 1])
    return np.ascontiguousarray(np.stack([top, left, bottom - top, right - left], axis=1)
                                .astype(np.int64))


class ReplayedCrop(ImageDecoder):
    """Replays one stored augmentation per sample from ReinforcementField ``reinforce``: its
    crop, flip and (with a partner) mixup/cutmix, at ``output_size`` (see the module docstring).
    The choice is kept in the batch's crops: ``ctx.crops[image].replay`` (a ReplayPlan).  The
    crops and the partners' crops are decoded by the op's backend (``backend=``, default
    "cpu")."""

    supports_paste = False     # its own mixing reads the decoded pixels after decoding

    def __init__(self, output_size: Any = 224, reinforce: str = "reinforce", *,
                 dct_scaling: bool = True, accept_jpeg_warnings: bool = False,
                 use_libturbojpeg: bool = True, backend: Union[str, ImageBackend] = "cpu"):
        super().__init__(output_size, dct_scaling, accept_jpeg_warnings, use_libturbojpeg,
                         backend)
        if self.backend.device != "cpu":
            raise ValueError(f"ReplayedCrop mixes the replayed pairs on the host; backend "
                             f"{self.backend!r} puts its outputs on {self.backend.device}: use "
                             f"backend='cpu' or DaliBackend(device='cpu')")
        self.reinforce = reinforce

    def absorb(self, ops: list) -> list:
        if ops and isinstance(ops[0], RandomHorizontalFlip):
            raise ValueError("ReplayedCrop replays the stored flip bit: remove the "
                             "RandomHorizontalFlip after it")
        return Decoder.absorb(self, ops)     # not ImageDecoder's: nothing to fold here

    def bind(self, reader, name: str, field_index: int) -> None:
        if self.reinforce not in reader.fields:
            raise ValueError(f"ReplayedCrop: no field {self.reinforce!r} in {reader.path} "
                             f"(fields: {reader.field_names})")
        field = reader.fields[self.reinforce]
        if not isinstance(field, ReinforcementField):
            raise TypeError(f"ReplayedCrop: field {self.reinforce!r} is a "
                            f"{type(field).__name__}, not a ReinforcementField")
        self.bind_image(reader, name, field_index)
        self.field = field
        self._rptrs = reader.payload_ptrs(self.reinforce).astype(np.int64)
        self._span = np.arange(field.record_size, dtype=np.int64)
        _summary(reader, self.reinforce, name)

    def bind_image(self, reader, name: str, field_index: int) -> None:
        """Attach to the image field only, to replay explicit records (``crops_for_records`` +
        ``replay_range``) without a reinforcement field, as the reinforce writer does."""
        super().bind(reader, name, field_index)
        self.field = None
        self._original = np.stack([self.orig_heights, self.orig_widths], axis=1)
        self._stored = np.stack([self.heights, self.widths], axis=1)

    def choose(self, ctx: BatchContext) -> np.ndarray:
        """int64[B]: the record replayed for each sample, uniform over NS, keyed (seed, epoch,
        index, OP_REPLAY)."""
        u = draws(ctx.seed, ctx.epoch, ctx.indices, OP_REPLAY, 0)
        return np.minimum((u * self.field.num_augs).astype(np.int64), self.field.num_augs - 1)

    def gather(self, indices: np.ndarray, choice: np.ndarray) -> np.ndarray:
        """The chosen records (structured, [B]) of samples ``indices``."""
        starts = self._rptrs[indices] + choice * self.field.record_size
        return self.reader.data[starts[:, None] + self._span].view(self.field.dtype).reshape(-1)

    def prepare(self, ctx: BatchContext, out: Any) -> None:
        choice = self.choose(ctx)
        ctx.crops[self.name] = self.crops_for_records(ctx.indices,
                                                      self.gather(ctx.indices, choice), choice)

    def crops_for_records(self, indices: np.ndarray, recs: np.ndarray,
                          choice: Optional[np.ndarray] = None,
                          generated_size: Optional[tuple[int, int]] = None) -> CropParams:
        """The crops (with their ReplayPlan) that replay explicit records, one per sample
        ``indices[k]`` and already valid for this file: what prepare draws after choosing.
        generated_size: the output size the records' CutMix boxes were drawn for (default: the
        field's)."""
        idx = np.ascontiguousarray(indices, dtype=np.int64)
        original, stored = self._original[idx], self._stored[idx]
        boxes = map_boxes(recs["box"], original, stored).astype(np.float64)
        flips = recs["flip"].astype(np.uint8)
        partner = recs["partner"].astype(np.int64)
        pos = np.flatnonzero(partner >= 0).astype(np.int64)
        pidx = np.ascontiguousarray(partner[pos])
        pboxes = map_boxes(recs["partner_box"][pos], self._original[pidx],
                           self._stored[pidx]).astype(np.float64)
        out_h, out_w = self.output_size
        gen_h, gen_w = generated_size or (self.field.output_size if self.field is not None
                                          else self.output_size)
        cbox = recs["cutmix_box"][pos].astype(np.float64)
        if (gen_h, gen_w) != (out_h, out_w):
            cbox = np.floor(cbox * np.array([out_h / gen_h, out_w / gen_w] * 2) + 0.5)
        cbox = np.clip(cbox, 0, [out_h, out_w, out_h, out_w]).astype(np.int64)
        partner_crops = CropParams.single_view(
            pboxes, recs["partner_flip"][pos].astype(np.uint8), self._stored[pidx],
            self._original[pidx], self.output_size, self.view_options())
        crops = CropParams.single_view(boxes, flips, stored, original, self.output_size,
                                       self.view_options())
        crops.replay = ReplayPlan(
            field=self.reinforce, choice=choice, records=recs, partner_positions=pos,
            partner_indices=pidx, partner_crops=partner_crops,
            mixup=np.ascontiguousarray(recs["mixup"][pos].astype(np.float64)),
            cutmix=np.ascontiguousarray(recs["cutmix"][pos].astype(np.float64)),
            cutmix_boxes=np.ascontiguousarray(cbox))
        return crops

    def decode_range(self, ctx: BatchContext, start: int, stop: int, out: Any,
                     worker: dict) -> None:
        self.replay_range(ctx.crops[self.name], ctx.indices, start, stop, out, worker)

    def replay_range(self, crops: CropParams, indices: np.ndarray, start: int, stop: int,
                     out: np.ndarray, worker: dict) -> None:
        """Positions start:stop of ``crops`` (from crops_for_records) into out (uint8 [n, H, W,
        3]): each crop through the backend, then its partner's, mixed as recorded.  ``worker``:
        from make_worker_state, one per thread."""
        self.backend.decode_range(crops, indices, start, stop, (out,), worker)
        rp = crops.replay
        pos = rp.partner_positions
        m0, m1 = int(np.searchsorted(pos, start)), int(np.searchsorted(pos, stop))
        n = m1 - m0
        if n == 0:
            return
        buf = worker.get("partner")
        if buf is None or len(buf) < n:
            buf = worker["partner"] = np.empty((max(n, 4), *self.output_size, 3), np.uint8)
        self.backend.decode_range(rp.partner_crops.take(m0, m1), rp.partner_indices[m0:m1], 0,
                                  n, (buf,), worker,
                                  lambda m: f" (mixing partner of sample "
                                            f"{int(indices[pos[m0 + m]])})")
        mix_range(out, buf, pos[m0:m1], rp.mixup[m0:m1], rp.cutmix[m0:m1],
                  rp.cutmix_boxes[m0:m1])


@dataclass
class ReplayPlan:
    """What ReplayedCrop replays for a batch of n samples, m of which have a mixing partner.

    field: the ReinforcementField; choice: int64[n] the record chosen per sample (None when the
    records were given); records: the chosen records (structured [n]); partner_positions:
    int64[m] the batch positions with a partner (ascending); partner_indices: int64[m] their
    partners' sample indices; partner_crops: the partners' CropParams (one view, m samples);
    mixup, cutmix: float64[m] lambdas (NaN: not applied); cutmix_boxes: int64[m, 4] (r1, c1, r2,
    c2) in output pixels, ml-dr's convention."""
    field: str
    choice: Optional[np.ndarray]
    records: np.ndarray
    partner_positions: np.ndarray
    partner_indices: np.ndarray
    partner_crops: CropParams
    mixup: np.ndarray
    cutmix: np.ndarray
    cutmix_boxes: np.ndarray


@register_default_decoder
class ReplayTargets(Decoder):
    """ReinforcementField -> float32 [B, num_classes]: the densified teacher top-k of the record
    that the ReplayedCrop of image field ``image`` chose for each sample."""

    def __init__(self, num_classes: int = 1000, densify: str = "smooth", image: str = "image"):
        if densify not in DENSIFY_MODES:
            raise ValueError(f"densify must be one of {DENSIFY_MODES}, got {densify!r}")
        self.num_classes = int(num_classes)
        self.densify = densify
        self.image = image

    field_types = (ReinforcementField,)

    @property
    def reads(self) -> tuple[str, ...]:
        return (self.image,)

    def bind(self, reader, name, field_index):
        super().bind(reader, name, field_index)
        field = reader.fields[name]
        if self.image not in reader.fields:
            raise ValueError(f"ReplayTargets: no image field {self.image!r} in {reader.path}")
        if self.num_classes < field.top_k:
            raise ValueError(f"num_classes {self.num_classes} < top_k {field.top_k}")
        max_id = _summary(reader, name, self.image)["max_id"]
        if max_id >= self.num_classes:
            raise ValueError(f"field {name!r}: class id {max_id} >= num_classes "
                             f"{self.num_classes}")

    def sample_shape(self, batch_size):
        return (self.num_classes,), np.float32

    def prepare(self, ctx: BatchContext, out: np.ndarray) -> None:
        crops = ctx.crops.get(self.image)
        replay = None if crops is None else crops.replay
        if replay is None or replay.field != self.name:
            raise ValueError(f"ReplayTargets needs the pipeline of {self.image!r} to start with "
                             f"ReplayedCrop(..., reinforce={self.name!r})")
        recs = replay.records
        densify(recs["ids"].astype(np.int64), recs["probs"].astype(np.float32),
                _MODE_IDS[self.densify], out[:len(ctx.indices)])


__all__ = ["ReplayedCrop", "ReplayTargets", "ReplayPlan", "map_boxes"]
