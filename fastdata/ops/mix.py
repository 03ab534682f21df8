"""Dense targets and Mixup / CutMix as batch ops, with the semantics of timm 1.0.31's
``timm/data/mixup.py`` (``tests/test_mix_timm.py`` feeds timm 1.0.31 the same draws and compares).

``OneHot`` turns integer labels into a dense float32 ``[B, C]`` target with label smoothing
(timm's ``off = eps / C``, ``on = 1 - eps + off``), or smooths an already dense target.
``Mixup`` mixes images and targets exactly as timm's ``Mixup`` does: the same arguments and
defaults (but ``multi_label``, below), the same ``batch`` / ``pair`` / ``elem`` modes, the same
partner (the reversed batch: element i is mixed with element B-1-i, so the batch size must be
even), the same CutMix box (``rand_bbox`` / ``rand_bbox_minmax`` as changed after timm 1.0.26: an
unclipped box is exactly ``int(H * sqrt(1 - lam))`` rows by ``int(W * sqrt(1 - lam))`` columns,
and a minmax box may touch the bottom and right borders), the same area-corrected lambda and
the same target ``lam * onehot(y) + (1 - lam) * onehot(flip(y))`` with the smoothing applied
inside the mix.

Differences from timm, all deliberate:

- Randomness comes from the counter-based RNG (``fastdata.rng``), never from numpy's or torch's
  global state.  Every decision is a pure function of ``(seed, epoch, key, OP_MIX, k)`` where the
  key is the batch number (``batch`` mode) or the sample index (``elem`` mode; in ``pair`` mode
  the index of the pair's first member), and ``k`` numbers the decision (see the ``K_*``
  constants).  So a run mixes the same way whatever the thread count, and resuming mid-epoch
  replays the same lambdas, methods and boxes.  Beta(a, a) comes from ``rng.beta_draws``
  (Marsaglia & Tsang's Gamma variates, a bounded number of uniform draws each).
- uint8 images are mixed the way timm's ``FastCollateMixup`` mixes them: in float32, rounded
  half to even, back to uint8.  Float images (float32 / float16 / bfloat16) are mixed in their
  own dtype, as ``Mixup`` does.  CutMix copies pixels and works for any dtype.
- CutMix in the loader, batch and pair modes: the parameters are drawn before the batch is
  decoded (``before_decode``) and the image decoder writes each image's box region straight into
  its partner's output (partners share the box), so no pixel is moved after decoding.  This
  needs only position-independent steps between the decoder and Mixup (ToTensor, ToTorchImage,
  ToDevice, Normalize, Convert, in the pipeline and in the batch ops before it); otherwise, and
  in elem mode, the regions are swapped after decoding.  Both give the same batches bit for
  bit.
- On the CPU the targets are computed with numpy and one Numba pass, not torch ops: torch's
  OpenMP threads would spin on the cores the decoding workers need.
- The images may be ``[B, C, H, W]`` (any memory format: the channels_last view ToTorchImage
  makes is fine) or ``[B, H, W, C]`` (before ToTorchImage), on the CPU or on the GPU.  They are
  mixed in place (the tensor handed in is the batch being produced, in the loader's ring slot or
  an op's per-slot buffer; nothing reads it again), pair by pair: both members of a pair are read
  before either is written, so partner pixels are always the original ones.
- The label may be integer class ids (``[B]`` or ``[B, 1]``: one-hot + smoothing inside the mix,
  as timm) or an already dense float target ``[B, C]`` (ReLabel's pooled soft labels, a
  teacher's probabilities): then it is smoothed first (``y * (1 - eps) + eps / C``, as ReLabel's
  code does, only when ``label_smoothing > 0``) and the dense targets are mixed.  timm's
  ``multi_label=True`` (dense multi-label targets smoothed towards 0.5) is not provided.  The
  target is float32 (float64 stays float64) and is put on the images' device, as timm does.
- ``ctx.mix`` records what was drawn (a ``MixRecord``), for tests and for ops
  that run later.
- ``region_target``: an optional callable that gives, for each CutMix sample, the soft label of
  the region actually pasted from its partner (ReLabel's label map pooled over the box), used in
  place of the partner's whole-image target.
- ``off_epoch``: mixing is off from this epoch on (timm's ``--mixup-off-epoch``), decided from
  the batch's epoch and so exact under resume.  Setting ``mixup_enabled = False`` also works, as
  in timm, but the loader prepares ``batches_ahead`` batches ahead: set it before ``iter()`` of
  the epoch it should apply to.
- timm's ``FastCollateMixup`` mode ``'half'`` is not provided.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol, Sequence, Union

import numpy as np
import torch
from numba import njit

from ..rng import OP_MIX, OP_MIX_BATCH, beta_draws, draws
from ..pixels.mix import mix_pairs_float, mix_pairs_u8, move_patches, swap_boxes
from .base import BatchContext, BatchOp
from .crops import PastePlan

# Draw numbers k of the OP_MIX stream of one key.  New decisions take new numbers; never renumber.
K_APPLY = 0        # mix at all (u < prob)
K_SWITCH = 1       # cutmix rather than mixup (u < switch_prob), when both are enabled
K_CY = 2           # box centre row (rand_bbox) / cut height (rand_bbox_minmax)
K_CX = 3           # box centre column / cut width
K_TOP = 4          # rand_bbox_minmax: top row
K_LEFT = 5         # rand_bbox_minmax: left column
K_BETA = 16        # first draw of the Beta variate (rng.beta_draws: 2 * rng.GAMMA_SPAN draws)

MODES = ("batch", "pair", "elem")
_CPU_CHUNK_PAIRS = 16                # pairs mixed at once on the CPU (bounds the float32 scratch)


@dataclass
class MixPlan:
    """The mixing parameters of one batch, one row per image.

    lam: float64[B] (after the area correction, 1 where not mixed); mixed, use_cutmix: bool[B];
    boxes: int64[B, 4] CutMix boxes (y0, y1, x0, x1 in output pixels, timm's convention; zeros
    without CutMix); partner: int64[B] (B-1-i).  Drawn before decoding (``before_decode``) the
    plan also names the ``image`` output, the ``size`` (B, H, W) it was drawn for, the rows the
    decoder ``pasted`` and the decoder's ``paste`` plan (None: nothing to paste)."""
    lam: np.ndarray
    mixed: np.ndarray
    use_cutmix: np.ndarray
    boxes: np.ndarray
    partner: np.ndarray
    image: Optional[str] = None
    size: Optional[tuple[int, int, int]] = None
    pasted: Optional[np.ndarray] = None
    paste: Optional[PastePlan] = None


class RegionTargets(Protocol):
    """What labels a CutMix region by what it shows (LabelMapPool is one): ``region_target(ctx,
    partner, boxes)`` -> Tensor[B, C], row k the soft label of region boxes[k] (y0, y1, x0, x1,
    output pixels) of batch position partner[k]'s image."""

    def region_target(self, ctx: BatchContext, partner: np.ndarray,
                      boxes: np.ndarray) -> torch.Tensor: ...


@dataclass
class MixRecord:
    """What Mixup drew for a batch (``ctx.mix``).  mode: 'batch', 'pair' or 'elem'; lam: float
    (batch mode) or float32 tensor [B] (pair, elem), after the area correction, 1 where not
    mixed; use_cutmix, mixed: bool / bool[B] (mixed: lam != 1); boxes: int64[B, 4] (y0, y1, x0,
    x1 in output pixels, zeros without CutMix); partner: int64[B] (B-1-i)."""
    mode: str
    lam: Union[float, torch.Tensor]
    use_cutmix: Union[bool, np.ndarray]
    mixed: Union[bool, np.ndarray]
    boxes: np.ndarray
    partner: np.ndarray


# -- targets -------------------------------------------------------------------------------------

def _smoothing_values(num_classes: int, eps: float) -> tuple[float, float]:
    off = eps / num_classes
    return 1.0 - eps + off, off


def _dense_target(label: torch.Tensor, num_classes: int, eps: float, device: Any,
                  who: str, copy: bool = True) -> torch.Tensor:
    """Integer ids [B] / [B, 1] -> one-hot with timm's on/off values; dense [B, C] -> smoothed.
    ``copy=False`` may return a dense float32 / float64 input itself when there is nothing to
    change (for callers that only read it).

    On the CPU the arithmetic is numpy's (the same float32 / float64 operations torch would do):
    torch's own CPU ops run on its OpenMP threads, which then spin on the cores the loader's
    decoding workers need."""
    if not isinstance(label, torch.Tensor):
        raise TypeError(f"{who}: the label must be a torch tensor, got {type(label).__name__}")
    on_cpu = torch.device(device).type == "cpu" and label.device.type == "cpu"
    if label.is_floating_point():
        if label.dim() != 2 or label.shape[1] != num_classes:
            raise ValueError(f"{who}: a dense target must be [B, {num_classes}], got "
                             f"{tuple(label.shape)}")
        dtype = torch.promote_types(label.dtype, torch.float32)
        if on_cpu and dtype in (torch.float32, torch.float64):
            if not copy and eps == 0 and label.dtype == dtype:
                return label
            y = label.numpy().astype(np.float32 if dtype == torch.float32 else np.float64)
            if eps > 0:      # y * (1 - eps) + eps / C, each scalar cast to y's dtype as torch does
                y *= y.dtype.type(1.0 - eps)
                y += y.dtype.type(eps / num_classes)
            return torch.from_numpy(y)
        y = label.to(device=device, dtype=dtype)
        if eps > 0:
            y = y * (1.0 - eps) + eps / num_classes
        elif y is label:
            y = y.clone()       # never hand back (or later mix into) the input tensor
        return y
    if label.dtype == torch.bool or label.is_complex():
        raise TypeError(f"{who}: labels must be integer class ids or a float target, got "
                        f"{label.dtype}")
    if label.dim() == 2 and label.shape[1] == 1:
        label = label[:, 0]
    if label.dim() != 1:
        raise ValueError(f"{who}: integer labels must be [B] or [B, 1], got {tuple(label.shape)}")
    if label.device.type == "cpu" and label.numel():
        lo, hi = int(label.min()), int(label.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"{who}: label {lo if lo < 0 else hi} is outside [0, {num_classes})")
    on, off = _smoothing_values(num_classes, eps)
    if on_cpu:
        ids = label.numpy().astype(np.int64)
        y = np.full((len(ids), num_classes), off, dtype=np.float32)
        y[np.arange(len(ids)), ids] = on
        return torch.from_numpy(y)
    ids = label.to(device=device, dtype=torch.int64, non_blocking=True).view(-1, 1)
    return torch.full((len(ids), num_classes), off, dtype=torch.float32,
                      device=device).scatter_(1, ids, on)


@njit(cache=True, nogil=True)
def _mix_target_rows(y: np.ndarray, partner: np.ndarray, region: np.ndarray,
                     use_region: np.ndarray, lam: np.ndarray, rest: np.ndarray,
                     out: np.ndarray) -> None:
    """out[i] = y[i] * lam[i] + s * rest[i], s = region[i] where use_region[i], else
    y[partner[i]]; each product rounded to the dtype, then the sum (torch's two-op order).
    One pass where torch makes a copy per operation."""
    for i in range(y.shape[0]):
        a = y[i]
        b = region[i] if use_region[i] else y[partner[i]]
        li, ri = lam[i], rest[i]
        o = out[i]
        for c in range(y.shape[1]):
            o[c] = a[c] * li + b[c] * ri


def _position(ctx: BatchContext, name: str, who: str) -> int:
    try:
        return list(ctx.names).index(name)
    except ValueError:
        raise KeyError(f"{who}: no output named {name!r} in this batch (outputs: "
                       f"{list(ctx.names)})") from None


class OneHot(BatchOp):
    """Integer labels ([B] or [B, 1]) -> a dense float32 target [B, num_classes] with timm's label
    smoothing: ``off = eps / C`` everywhere, ``on = 1 - eps + off`` at the class (what timm's
    ``mixup_target`` gives with lam = 1).  A dense float target [B, C] is smoothed instead
    (``y * (1 - eps) + eps / C``).

    As a batch op (``Loader(batch_ops=[OneHot(1000)])``) it replaces the output named ``label``;
    in a label pipeline (``"label": [IntDecoder(), ToTensor(), OneHot(1000)]``) it maps that
    field's tensor.  The target is on the labels' device.  Integer labels are replaced: to keep
    them too, read the field a second time (a custom field name) or compute
    ``target.argmax(1)``.  Before ``Mixup`` there is no need for OneHot (Mixup one-hots and
    smooths integer labels itself); if both are used, give the smoothing to only one of them.
    """

    def __init__(self, num_classes: int, label_smoothing: float = 0.0, label: str = "label"):
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.num_classes = int(num_classes)
        self.label_smoothing = float(label_smoothing)
        self.label = label

    def __call__(self, batch: Any, ctx: BatchContext) -> Any:
        if isinstance(batch, torch.Tensor):       # as a step of the label field's pipeline
            return _dense_target(batch, self.num_classes, self.label_smoothing, batch.device,
                                 "OneHot")
        k = _position(ctx, self.label, "OneHot")
        out = list(batch)
        out[k] = _dense_target(out[k], self.num_classes, self.label_smoothing, out[k].device,
                               "OneHot")
        return tuple(out)


# -- Mixup / CutMix ------------------------------------------------------------------------------

def _nchw(x: torch.Tensor, layout: str) -> torch.Tensor:
    """A [B, C, H, W] view of the image batch (a permuted view for [B, H, W, C])."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"Mixup needs a 4-d image batch tensor, got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if layout == "auto":
        if x.shape[1] in (1, 3, 4):
            layout = "NCHW"
        elif x.shape[-1] in (1, 3, 4):
            layout = "NHWC"
        else:
            raise ValueError(f"Mixup: cannot tell the channel dimension of {tuple(x.shape)}; "
                             f"pass layout='NCHW' or 'NHWC'")
    return x if layout == "NCHW" else x.permute(0, 3, 1, 2)


def _lam_rest(lam: Any, size: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Per-row (lam, 1 - lam) in the arithmetic's dtype: a batch lambda is a Python float, its
    1 - lam computed in float64 (timm's ``mul_(1. - lam)``); per-row lambdas are float32 and
    1 - lam is computed in float32 (timm's ``lam_batch``)."""
    if isinstance(lam, float):
        return np.full(size, lam, dtype=dtype), np.full(size, 1.0 - lam, dtype=dtype)
    lam32 = np.asarray(lam, dtype=np.float32)
    return lam32.astype(dtype), (np.float32(1) - lam32).astype(dtype)


def _rows_flat(v: torch.Tensor) -> Optional[torch.Tensor]:
    """A [B, C*H*W] view of the batch in memory order (same order in every row), or None."""
    strides = v.stride()
    order = sorted(range(1, v.dim()), key=lambda d: -strides[d])
    permuted = v.permute(0, *order)
    if not permuted[0].is_contiguous():
        return None
    try:
        return permuted.view(v.shape[0], -1)
    except RuntimeError:
        return None


_NUMBA_DTYPES = (torch.uint8, torch.float32, torch.float64)


def _mixup_torch(v: torch.Tensor, lam: Any, rows: np.ndarray) -> None:
    """The same with torch ops (GPU, float16 / bfloat16, odd strides), a chunk of pairs at a
    time: the top rows s..e and their partners, the bottom rows B-e..B-s."""
    size = v.shape[0]
    work = v.dtype if v.is_floating_point() else torch.float32
    chunk = size // 2 if v.device.type != "cpu" else _CPU_CHUNK_PAIRS
    lams = None if isinstance(lam, float) else _lam_rest(lam, size, np.dtype(np.float32))

    def mix(a, b, sel):       # a * lam + b * (1 - lam), lam per row of ``sel`` or a float
        if lams is None:
            return a * lam + b * (1.0 - lam)
        shape = (-1,) + (1,) * (a.dim() - 1)
        lt = torch.from_numpy(lams[0][sel]).to(device=a.device, dtype=work).view(shape)
        rt = torch.from_numpy(lams[1][sel]).to(device=a.device, dtype=work).view(shape)
        return a * lt + b * rt

    def write(dst, new, sel):
        new = (new.round_() if not v.is_floating_point() else new).to(v.dtype)
        if rows[sel].all():
            dst.copy_(new)
        else:
            mask = torch.from_numpy(rows[sel]).to(v.device).view((-1,) + (1,) * (v.dim() - 1))
            dst.copy_(torch.where(mask, new, dst))

    for s in range(0, size // 2, chunk):
        e = min(s + chunk, size // 2)
        top_rows, bottom_rows = np.arange(s, e), np.arange(size - 1 - s, size - 1 - e, -1)
        if not (rows[top_rows].any() or rows[bottom_rows].any()):
            continue
        top, bottom = v[s:e], v[size - e:size - s].flip(0)   # bottom[q] pairs with top[q]
        a, b = top.to(work), bottom.to(work)
        new_top, new_bottom = mix(a, b, top_rows), mix(b, a, bottom_rows)
        write(v[s:e], new_top, top_rows)
        write(v[size - e:size - s], new_bottom.flip(0), bottom_rows[::-1])


class Mixup(BatchOp):
    """timm's ``Mixup`` as a loader batch op (see the module docstring for the exact semantics).

    mixup_alpha, cutmix_alpha: Beta(alpha, alpha) parameters; a method is enabled if its alpha
      is > 0.  cutmix_minmax: (min, max) box side as a fraction of the image side (0 <= min <=
      max <= 1); enables CutMix with boxes from ``rand_bbox_minmax``, forces cutmix_alpha = 1 and
      the area-corrected lambda.  prob: probability of mixing a batch (batch mode), pair or
      element.  switch_prob: probability of CutMix rather than Mixup when both are enabled.
      mode: 'batch' (one lambda and box per batch), 'pair' (per pair i, B-1-i, mixed both ways),
      'elem' (per element).  correct_lam: lambda = 1 - box area / image area after clipping.
      label_smoothing, num_classes: the target's smoothing and size.
    image, label: names of the outputs to mix (in ``ctx.names``).
    region_target: optional ``f(ctx, partner, boxes) -> Tensor[B, C]``, or an object with such a
      ``region_target`` method (a ``RegionTargets``: LabelMapPool is one), with partner int64[B]
      (positions in the batch) and boxes int64[B, 4] (y0, y1, x0, x1 in output-image pixels,
      empty for rows without CutMix): row k is the soft label of the region of image
      ``partner[k]`` that CutMix pasted into image k (rows without CutMix are ignored).  The
      CutMix target of row k is then ``lam_k * target[k] + (1 - lam_k) * region[k]`` (the region
      label is smoothed like the targets) instead of using ``target[partner[k]]``.
    off_epoch: no mixing in epochs >= off_epoch (timm's ``--mixup-off-epoch``).
    layout: 'auto' (dim 1 or else the last dim of size 1, 3 or 4 holds the channels), 'NCHW'
      (any memory format) or 'NHWC'.

    The attribute ``mixup_enabled`` (True) can be switched off by the training loop, as in timm.
    """

    def __init__(self, mixup_alpha: float = 1.0, cutmix_alpha: float = 0.0,
                 cutmix_minmax: Optional[Sequence[float]] = None, prob: float = 1.0,
                 switch_prob: float = 0.5, mode: str = "batch", correct_lam: bool = True,
                 label_smoothing: float = 0.1, num_classes: int = 1000, image: str = "image",
                 label: str = "label",
                 region_target: Union[None, "RegionTargets",
                                      Callable[[BatchContext, np.ndarray, np.ndarray],
                                               torch.Tensor]] = None,
                 off_epoch: Optional[int] = None, layout: str = "auto"):
        self.mixup_alpha = float(mixup_alpha)
        self.cutmix_alpha = float(cutmix_alpha)
        self.cutmix_minmax = None
        if cutmix_minmax is not None:
            if len(cutmix_minmax) != 2:
                raise ValueError(f"cutmix_minmax must be (min, max), got {cutmix_minmax!r}")
            lo, hi = float(cutmix_minmax[0]), float(cutmix_minmax[1])
            if not 0.0 <= lo <= hi <= 1.0:
                raise ValueError(f"cutmix_minmax must satisfy 0 <= min <= max <= 1, got "
                                 f"{cutmix_minmax!r}")
            self.cutmix_minmax = (lo, hi)
            self.cutmix_alpha = 1.0      # as timm: keeps the logic simple
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            raise ValueError("mixup_alpha and cutmix_alpha must be >= 0")
        if self.mixup_alpha == 0 and self.cutmix_alpha == 0:
            raise ValueError("one of mixup_alpha > 0, cutmix_alpha > 0 or cutmix_minmax must be "
                             "given (use OneHot for smoothing alone)")
        for name, p in (("prob", prob), ("switch_prob", switch_prob)):
            if not 0.0 <= float(p) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if layout not in ("auto", "NCHW", "NHWC"):
            raise ValueError(f"layout must be 'auto', 'NCHW' or 'NHWC', got {layout!r}")
        if image == label:
            raise ValueError("image and label must name different outputs")
        self.mix_prob = float(prob)
        self.switch_prob = float(switch_prob)
        self.mode = mode
        self.correct_lam = bool(correct_lam)
        self.label_smoothing = float(label_smoothing)
        self.num_classes = int(num_classes)
        self.image, self.label = image, label
        self.region_target = region_target
        if region_target is not None and not callable(region_target) and \
                not callable(getattr(region_target, "region_target", None)):
            raise TypeError(f"region_target must be callable or have a region_target method, "
                            f"got {type(region_target).__name__}")
        self.off_epoch = None if off_epoch is None else int(off_epoch)
        self.layout = layout
        self.mixup_enabled = True
        self._targets: list = []        # per ring slot: the CPU target buffer, reused

    def setup(self, ring_size: int) -> None:
        self._targets = [None] * ring_size

    # -- parameters ------------------------------------------------------------------------------
    def enabled(self, epoch: int) -> bool:
        return self.mixup_enabled and (self.off_epoch is None or epoch < self.off_epoch)

    @property
    def _op(self) -> int:
        """Batch mode keys draws by batch number, the others by sample index: separate streams."""
        return OP_MIX_BATCH if self.mode == "batch" else OP_MIX

    def _keys(self, ctx: BatchContext, batch_size: int) -> np.ndarray:
        if self.mode == "batch":
            # Each rank's batch b gets its own draws, as timm's per-rank seeding gives.
            return np.array([int(ctx.batch) * ctx.world_size + ctx.rank], dtype=np.int64)
        indices = np.ascontiguousarray(ctx.indices, dtype=np.int64)
        return indices[:batch_size // 2] if self.mode == "pair" else indices[:batch_size]

    def draw(self, ctx: BatchContext, batch_size: int, height: int, width: int) -> "MixPlan":
        """The mixing parameters of one batch, one row per image (a MixPlan)."""
        keys = self._keys(ctx, batch_size)
        n = len(keys)
        lam = np.ones(n, dtype=np.float64)
        cut = np.zeros(n, dtype=bool)
        boxes = np.zeros((n, 4), dtype=np.int64)
        per_elem = self.mode != "batch"
        if n and self.enabled(ctx.epoch):
            seed, epoch = int(ctx.seed), int(ctx.epoch)
            apply = draws(seed, epoch, keys, self._op, K_APPLY) < self.mix_prob
            if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
                cut = draws(seed, epoch, keys, self._op, K_SWITCH) < self.switch_prob
            else:
                cut = np.full(n, self.cutmix_alpha > 0)
            alphas = np.where(cut, self.cutmix_alpha, self.mixup_alpha)
            lam = np.where(apply, beta_draws(seed, epoch, keys, self._op, alphas, K_BETA), 1.0)
            if per_elem:                 # timm keeps per-element lambdas in float32
                lam = lam.astype(np.float32)
            cut &= lam != 1.0            # timm skips an element (or batch) whose lambda is 1
            if cut.any():
                boxes[cut], area = self._boxes(seed, epoch, keys[cut], lam[cut], height, width)
                if self.correct_lam or self.cutmix_minmax is not None:
                    lam[cut] = 1.0 - area / float(height * width)
        lam = lam.astype(np.float64)
        mixed = lam != 1.0
        if self.mode == "batch":
            lam, cut, mixed = (np.repeat(a, batch_size) for a in (lam, cut, mixed))
            boxes = np.repeat(boxes, batch_size, axis=0)
        elif self.mode == "pair":
            lam, cut, mixed = (np.concatenate([a, a[::-1]]) for a in (lam, cut, mixed))
            boxes = np.concatenate([boxes, boxes[::-1]])
        return MixPlan(lam=lam, mixed=mixed, use_cutmix=cut, boxes=boxes,
                       partner=np.arange(batch_size - 1, -1, -1, dtype=np.int64))

    def _boxes(self, seed: int, epoch: int, keys: np.ndarray, lam: np.ndarray, h: int, w: int):
        """timm 1.0.31's rand_bbox / rand_bbox_minmax from counter-based uniforms: (boxes, areas).
        Each ``np.random.randint(low, high)`` of timm is ``low + floor(u * (high - low))``."""
        u_y = draws(seed, epoch, keys, self._op, K_CY)
        u_x = draws(seed, epoch, keys, self._op, K_CX)
        if self.cutmix_minmax is not None:
            lo, hi = self.cutmix_minmax
            def randint(u, low, high):    # numpy's randint(low, high): [low, high)
                return low + np.floor(u * np.maximum(high - low, 0)).astype(np.int64)
            cut_h = randint(u_y, int(h * lo), int(h * hi))
            cut_w = randint(u_x, int(w * lo), int(w * hi))
            # timm > 1.0.26: the top-left corner ranges over every position that fits, the
            # last one included (randint(0, H - cut_h + 1)).
            y0 = randint(draws(seed, epoch, keys, self._op, K_TOP), 0, h - cut_h + 1)
            x0 = randint(draws(seed, epoch, keys, self._op, K_LEFT), 0, w - cut_w + 1)
            y1, x1 = y0 + cut_h, x0 + cut_w
        else:
            ratio = np.sqrt(1 - lam)          # float32 for per-element lambdas, as timm
            cut_h = (h * ratio).astype(np.int64)
            cut_w = (w * ratio).astype(np.int64)
            cy = np.floor(u_y * h).astype(np.int64)     # randint(0, H)
            cx = np.floor(u_x * w).astype(np.int64)
            # timm > 1.0.26: an odd side's extra row (column) goes after the centre, so an
            # unclipped box is cut_h x cut_w exactly.
            y0, y1 = np.clip(cy - cut_h // 2, 0, h), np.clip(cy + (cut_h + 1) // 2, 0, h)
            x0, x1 = np.clip(cx - cut_w // 2, 0, w), np.clip(cx + (cut_w + 1) // 2, 0, w)
        boxes = np.stack([y0, y1, x0, x1], axis=1).astype(np.int64)
        return boxes, ((y1 - y0) * (x1 - x0)).astype(np.float64)

    # -- the op ----------------------------------------------------------------------------------
    def before_decode(self, ctx: BatchContext, images: dict[str, tuple[int, int]]) -> None:
        """Batch and pair modes: draw the batch's mixing before it is decoded and let the image
        decoder do the CutMix.  Partners share their box there, so each image's box region is
        written straight into its partner's output and nothing is moved afterwards (swapping
        the regions of a decoded batch cost ~7% of its decoding time on a 2-core CPU).
        Elem mode keeps the swap: its partners' boxes differ."""
        size = images.get(self.image)
        n = len(ctx.indices)
        if size is None or self.mode == "elem" or n % 2 or ctx.paste_plan(self.image) is not None:
            return
        p = self.draw(ctx, n, *size)
        boxes = p.boxes
        pasted = p.use_cutmix & p.mixed & (boxes[:, 1] > boxes[:, 0]) & \
            (boxes[:, 3] > boxes[:, 2])
        p.image, p.pasted, p.size = self.image, pasted, (n, *size)
        if pasted.any():
            p.paste = PastePlan.between(np.where(pasted, p.partner, -1), boxes)
        ctx.mix_plans[self] = p

    def __call__(self, batch: tuple, ctx: BatchContext) -> tuple:
        """Mix the outputs named ``image`` and ``label``; what was drawn goes to ``ctx.mix``
        (a MixRecord)."""
        if not isinstance(batch, (tuple, list)):
            raise TypeError("Mixup is a batch op: put it in Loader(batch_ops=[...]), not in a "
                            "field's pipeline")
        ki = _position(ctx, self.image, "Mixup")
        kl = _position(ctx, self.label, "Mixup")
        images, labels = batch[ki], batch[kl]
        v = _nchw(images, self.layout)
        size = v.shape[0]
        if size % 2:
            raise ValueError(f"Mixup needs an even batch size (element i is mixed with element "
                             f"B-1-i), got {size}: use an even batch_size and drop_last=True")
        if len(labels) != size:
            raise ValueError(f"Mixup: {size} images but {len(labels)} labels")
        p = ctx.mix_plans.get(self)
        if p is None:
            p = self.draw(ctx, size, v.shape[2], v.shape[3])
        elif p.size != (size, v.shape[2], v.shape[3]):
            raise ValueError(f"Mixup: the decoder pasted CutMix boxes for {p['size'][1]}x"
                             f"{p['size'][2]} images, but output {self.image!r} is "
                             f"{tuple(v.shape)} ({self.layout} layout)")
        self._mix_pixels(v, p)
        target = self._mix_targets(labels, p, ctx, v.device)
        if self.mode == "batch":
            ctx.mix = MixRecord(self.mode, float(p.lam[0]) if size else 1.0,
                                bool(p.use_cutmix[0]) if size else False,
                                bool(p.mixed[0]) if size else False, p.boxes, p.partner)
        else:
            ctx.mix = MixRecord(self.mode, torch.from_numpy(p.lam.astype(np.float32)),
                                p.use_cutmix, p.mixed, p.boxes, p.partner)
        out = list(batch)
        out[ki], out[kl] = images, target
        return tuple(out)

    def _mix_pixels(self, v: torch.Tensor, p: MixPlan) -> None:
        cut, mixed = p.use_cutmix, p.mixed
        if not mixed.any():
            return
        boxes = p.boxes
        mix_rows = mixed & ~cut
        cut_rows = cut & (boxes[:, 1] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 2])
        if p.pasted is not None:
            cut_rows &= ~p.pasted          # the decoder has pasted those
        cut_rows = np.flatnonzero(cut_rows)
        lam = p.lam if self.mode != "batch" else float(p.lam[0])
        flat = _rows_flat(v) if v.device.type == "cpu" and v.dtype in _NUMBA_DTYPES else None
        if flat is not None:
            nhwc = v.permute(0, 2, 3, 1).numpy()
            if len(cut_rows) and self.mode != "elem" and nhwc.flags.c_contiguous:
                # Partners share their box: swap the regions in place.  Mixup rows are other
                # pairs, so the order of the two steps does not matter.
                firsts = cut_rows[cut_rows < len(nhwc) - 1 - cut_rows]
                tmp = np.empty(nhwc.shape[2] * nhwc.shape[3], dtype=nhwc.dtype)
                swap_boxes(nhwc.reshape(-1), np.array(nhwc.shape, dtype=np.int64), firsts,
                           boxes, tmp)
                cut_rows = cut_rows[:0]
            # Compiled: take every patch from its partner, mix, then paste.
            if len(cut_rows):
                sizes = (boxes[cut_rows, 1] - boxes[cut_rows, 0]) * \
                    (boxes[cut_rows, 3] - boxes[cut_rows, 2]) * nhwc.shape[3]
                offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
                patches = np.empty(int(offsets[-1]), dtype=nhwc.dtype)
                move_patches(nhwc, cut_rows, p.partner[cut_rows], boxes, patches, offsets, True)
            if mix_rows.any():
                arr = flat.numpy()
                kernel = mix_pairs_u8 if v.dtype == torch.uint8 else mix_pairs_float
                dtype = np.dtype(np.float32) if v.dtype == torch.uint8 else arr.dtype
                kernel(arr, *_lam_rest(lam, len(arr), dtype), mix_rows)
            if len(cut_rows):
                move_patches(nhwc, cut_rows, cut_rows, boxes, patches, offsets, False)
            return
        if self.mode == "batch" and cut[0]:
            if len(cut_rows):
                y0, y1, x0, x1 = (int(c) for c in boxes[0])
                region = v[:, :, y0:y1, x0:x1]
                region.copy_(region.flip(0))        # flip copies: partners read before written
            return
        patches = []                  # taken from the partners before any row is written
        for i in cut_rows:
            y0, y1, x0, x1 = (int(c) for c in boxes[i])
            j = int(p.partner[i])
            patches.append((int(i), y0, y1, x0, x1, v[j, :, y0:y1, x0:x1].clone()))
        if mix_rows.any():
            _mixup_torch(v, lam, mix_rows)
        for i, y0, y1, x0, x1, patch in patches:
            v[i, :, y0:y1, x0:x1] = patch

    def _mix_targets(self, labels: torch.Tensor, p: MixPlan, ctx: BatchContext,
                     device: torch.device) -> torch.Tensor:
        """``lam * y + (1 - lam) * y[partner]`` (or the pasted region's own label), with timm's
        rounding: a batch lambda is a float (1 - lam in float64), per-row lambdas float32."""
        eps, classes = self.label_smoothing, self.num_classes
        y = _dense_target(labels, classes, eps, device, "Mixup", copy=False)
        if not p.mixed.any():
            return y.clone() if y is labels else y
        cut = p.use_cutmix & p.mixed
        region = None
        if self.region_target is not None and cut.any():
            source = getattr(self.region_target, "region_target", self.region_target)
            region = source(ctx, p.partner.copy(), p.boxes.copy())
            if not isinstance(region, torch.Tensor) or tuple(region.shape) != tuple(y.shape):
                raise ValueError(f"region_target must return a tensor of shape "
                                 f"{tuple(y.shape)}, got "
                                 f"{getattr(region, 'shape', type(region).__name__)}")
            region = _dense_target(region.to(device=device, dtype=y.dtype), classes, eps,
                                   device, "Mixup region_target", copy=False)   # smoothed like y
        if y.device.type == "cpu" and y.dtype in (torch.float32, torch.float64):
            return self._mix_targets_numba(y, p, cut if region is not None else None, region,
                                           ctx.slot)
        y_partner = y.flip(0)
        if self.mode == "batch":
            lam = float(p.lam[0])
            target = y * lam + y_partner * (1.0 - lam)
        else:
            lam = torch.from_numpy(p.lam.astype(np.float32)).to(
                device=device, dtype=y.dtype).view(-1, 1)
            target = y * lam + y_partner * (1 - lam)
        if region is not None:
            rows = torch.from_numpy(np.flatnonzero(cut)).to(device)
            lam_rows = torch.from_numpy(p.lam[cut].astype(
                np.float64 if self.mode == "batch" else np.float32)).to(
                device=device, dtype=y.dtype).view(-1, 1)
            target[rows] = y[rows] * lam_rows + region[rows] * (1 - lam_rows)
        return target

    def _mix_targets_numba(self, y: torch.Tensor, p: MixPlan, region_rows: Optional[np.ndarray],
                           region: Optional[torch.Tensor], slot: int) -> torch.Tensor:
        """The CPU path of _mix_targets, the same values bit for bit, in one pass, into the
        slot's target buffer (in the loader; a new array for direct calls)."""
        dtype = y.numpy().dtype.type
        if self.mode == "batch":       # a float lambda: 1 - lam in float64, then cast
            lam = p.lam.astype(np.float64)
            big, rest = lam.astype(dtype), (1.0 - lam).astype(dtype)
        else:                          # a float32 tensor cast to y's dtype: 1 - lam there
            big = p.lam.astype(np.float32).astype(dtype)
            rest = dtype(1) - big
        use_region = np.zeros(len(big), dtype=np.bool_)
        regions = y.numpy()[:0]
        if region_rows is not None:
            use_region = region_rows
            regions = region.numpy()
            # The region rows' lambdas go through the same cast as in the torch path.
            lam_rows = p.lam.astype(np.float64 if self.mode == "batch" else np.float32)
            big = np.where(use_region, lam_rows.astype(dtype), big)
            rest = np.where(use_region, dtype(1) - lam_rows.astype(dtype), rest)
        out = self._target_buffer(slot, y.numpy())
        _mix_target_rows(y.numpy(), np.ascontiguousarray(p.partner, dtype=np.int64),
                         np.ascontiguousarray(regions), use_region, big.astype(dtype),
                         rest.astype(dtype), out)
        return torch.from_numpy(out)

    def _target_buffer(self, slot: int, like: np.ndarray) -> np.ndarray:
        """A [B, C] array like ``like`` for the batch in ring slot ``slot``: reused while the
        shape and dtype stay (a batch's CPU tensors live until the next batch is taken, so the
        slot's previous target is no longer read)."""
        if not 0 <= slot < len(self._targets):
            return np.empty_like(like)
        buffer = self._targets[slot]
        if buffer is None or buffer.shape != like.shape or buffer.dtype != like.dtype:
            buffer = self._targets[slot] = np.empty_like(like)
        return buffer
