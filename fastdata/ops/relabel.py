"""ReLabel's LabelPooling: each crop's soft target from the image's stored top-k label map.

``LabelMapPool`` decodes a LabelMapField into float32 [B, C] targets, per sample:

1. the crop box the image decoder drew (stored pixels) is normalised by the stored image size
   (the same normalisation as the original image's: max_resolution keeps proportions) and
   scaled to map cells: x1 = left/W*Wm, y1 = top/H*Hm, x2 = (left+width)/W*Wm,
   y2 = (top+height)/H*Hm, minus 0.5 (the reference's half-cell alignment);
2. the top-k map, densified to C x Hm x Wm with zeros for classes not stored (sparsely: only the
   classes present are touched), is RoIAlign-pooled to 1 x 1 over that box exactly as
   ``torchvision.ops.roi_align(maps, boxes, output_size=(1, 1), spatial_scale=1,
   sampling_ratio=-1, aligned=False)``: ceil(roi size) bilinear samples per axis, roi size
   clamped to >= 1 cell, samples outside [-1, size] contribute 0, others clamped into the map.
   The box geometry is computed in float32 as torchvision does (so sample counts and positions
   match bit for bit); the weighted sums are accumulated in float64;
3. softmax over all C classes, where each class absent from the map contributes exp(0).

ReLabel's reference code passes the box with rows in the x slot (``transposed_box=True``
reproduces it); the default is the geometrically correct box.  The flip does not change the
whole crop's label (the reference ignores it); ``region_target`` (used by CutMix to label a
pasted region by the partner's own map) maps output pixels back through the flip explicitly.

The pooling runs in the loader's worker threads, beside the image decoding, in a Numba kernel
that holds no GIL.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from ..fields import LabelMapField, RGBImageField
from ..fields.label_map import MAX_CLASS_ID, as_numpy
from ..pixels.boxes import from_timm
from ..reader import SampleError
from .base import BatchContext, Decoder, register_default_decoder
from .crops import CropView

STATUS_OK, STATUS_BAD_ID, STATUS_BAD_SCORE = 0, 1, 2

_HALF_TABLE: np.ndarray | None = None


def half_table() -> np.ndarray:
    """float32[65536]: the value of every float16 bit pattern (the kernel's float16 decoder)."""
    global _HALF_TABLE
    if _HALF_TABLE is None:
        _HALF_TABLE = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16) \
            .astype(np.float32)
    return _HALF_TABLE


# -- geometry ------------------------------------------------------------------------------------

def output_region_to_stored(boxes: np.ndarray, flips: np.ndarray, output_size: tuple,
                            regions: np.ndarray) -> np.ndarray:
    """Map regions of the output images back to the stored images.

    boxes: [n, 4] crop boxes (top, left, height, width) in stored pixels; flips: [n] bits;
    regions: [n, 4] (y0, y1, x0, x1) in output pixels.  Returns float64 [n, 4] (top, left,
    height, width) in stored pixels of what each region shows.  A flipped output's column x
    shows the crop's column out_w - x, so the region is mirrored before it is scaled."""
    out_h, out_w = float(output_size[0]), float(output_size[1])
    boxes = np.asarray(boxes, dtype=np.float64)
    y0, x0, h, w = from_timm(regions).T
    flipped = np.asarray(flips).astype(bool)
    x0 = np.where(flipped, out_w - (x0 + w), x0)
    top = boxes[:, 0] + y0 * boxes[:, 2] / out_h
    left = boxes[:, 1] + x0 * boxes[:, 3] / out_w
    height = h * boxes[:, 2] / out_h
    width = w * boxes[:, 3] / out_w
    return np.stack([top, left, height, width], axis=1)


def map_rois(boxes: np.ndarray, sizes: np.ndarray, map_height: int, map_width: int,
             transposed: bool = False) -> np.ndarray:
    """float32 [n, 4] RoIAlign boxes (x1, y1, x2, y2) in map cells, half-cell offset applied.

    boxes: [n, 4] (top, left, height, width) in stored pixels (float or int); sizes: [n, 2]
    stored (height, width).  As the reference: the normalised corners (top/H, left/W,
    top/H + height/H, left/W + width/W) are computed in float64, rounded to float32, then scaled
    and offset in float32.  ``transposed`` puts rows in the x slot (the reference code's order).
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    sizes = np.asarray(sizes, dtype=np.float64)
    top, bottom_h = boxes[:, 0] / sizes[:, 0], boxes[:, 2] / sizes[:, 0]
    left, right_w = boxes[:, 1] / sizes[:, 1], boxes[:, 3] / sizes[:, 1]
    t, l, b, r = (v.astype(np.float32) for v in (top, left, top + bottom_h, left + right_w))
    mh, mw, half = np.float32(map_height), np.float32(map_width), np.float32(0.5)
    if transposed:
        x1, y1, x2, y2 = t * mw, l * mh, b * mw, r * mh
    else:
        x1, y1, x2, y2 = l * mw, t * mh, r * mw, b * mh
    return np.stack([x1 - half, y1 - half, x2 - half, y2 - half], axis=1).astype(np.float32)


# -- kernels -------------------------------------------------------------------------------------

@njit(cache=True, nogil=True, inline="always")
def _clamp_sample(v, size: int):
    """One axis of torchvision's roi_align bilinear sample: (low cell, high cell, position),
    the position clamped to [0, size - 1] as its CPU kernel does."""
    if v <= np.float32(0.0):
        v = np.float32(0.0)
    low = int(v)
    if low >= size - 1:
        return size - 1, size - 1, np.float32(size - 1)
    return low, low + 1, np.float32(v)


@njit(cache=True, nogil=True)
def roi_cell_weights(x1, y1, x2, y2, height: int, width: int, weights: np.ndarray) -> None:
    """weights[r, c] = the share of cell (r, c) in a 1 x 1 RoIAlign of box (x1, y1, x2, y2)
    (float32, map cells, aligned=False, sampling_ratio=-1), so pooled = sum(weights * map)."""
    one = np.float32(1.0)
    half = np.float32(0.5)
    weights[:, :] = 0.0
    roi_w = np.float32(x2 - x1)
    roi_h = np.float32(y2 - y1)
    if roi_w < one:
        roi_w = one
    if roi_h < one:
        roi_h = one
    grid_h = int(np.ceil(roi_h))
    grid_w = int(np.ceil(roi_w))
    count = max(grid_h * grid_w, 1)
    fh = np.float32(height)
    fw = np.float32(width)
    for iy in range(grid_h):
        yy = np.float32(y1 + (np.float32(iy) + half) * roi_h / np.float32(grid_h))
        for ix in range(grid_w):
            xx = np.float32(x1 + (np.float32(ix) + half) * roi_w / np.float32(grid_w))
            if not (yy >= -one and yy <= fh and xx >= -one and xx <= fw):
                continue
            y_low, y_high, y = _clamp_sample(yy, height)
            x_low, x_high, x = _clamp_sample(xx, width)
            ly = np.float32(y - np.float32(y_low))
            lx = np.float32(x - np.float32(x_low))
            hy = np.float32(one - ly)
            hx = np.float32(one - lx)
            weights[y_low, x_low] += np.float32(hy * hx)
            weights[y_low, x_high] += np.float32(hy * lx)
            weights[y_high, x_low] += np.float32(ly * hx)
            weights[y_high, x_high] += np.float32(ly * lx)
    weights /= count


@njit(cache=True, nogil=True)
def _pool_one(data, ptr: int, k: int, height: int, width: int, table, weights, num_classes: int,
              acc, seen, present, out_row, info, b: int) -> int:
    cells = k * height * width
    score_base = ptr + 2 * cells
    n_present = 0
    status = 0
    for r in range(height):
        for c in range(width):
            w = weights[r, c]
            if w == 0.0:
                continue
            for j in range(k):
                e = 2 * ((j * height + r) * width + c)
                cid = np.int64(data[ptr + e]) | (np.int64(data[ptr + e + 1]) << 8)
                if cid >= 32768 or cid >= num_classes:
                    info[b] = cid - 65536 if cid >= 32768 else cid
                    status = 1
                    break
                q = score_base + e
                s = table[np.int64(data[q]) | (np.int64(data[q + 1]) << 8)]
                if not np.isfinite(s):
                    info[b] = j * height * width + r * width + c
                    status = 2
                    break
                if seen[cid] == 0:
                    seen[cid] = 1
                    present[n_present] = cid
                    n_present += 1
                acc[cid] += w * s
            if status != 0:
                break
        if status != 0:
            break
    if status == 0:
        # softmax over all classes; each absent class holds 0 and contributes exp(0)
        m = 0.0
        for i in range(n_present):
            v = acc[present[i]]
            if v > m:
                m = v
        base = np.exp(-m)
        z = (num_classes - n_present) * base
        for i in range(n_present):
            cid = present[i]
            acc[cid] = np.exp(acc[cid] - m)
            z += acc[cid]
        inv = 1.0 / z
        fill = np.float32(base * inv)
        for i in range(num_classes):
            out_row[i] = fill
        for i in range(n_present):
            cid = present[i]
            out_row[cid] = np.float32(acc[cid] * inv)
    for i in range(n_present):
        cid = present[i]
        acc[cid] = 0.0
        seen[cid] = 0
    return status


@njit(cache=True, nogil=True)
def pool_range(data, ptrs, indices, positions, rois, start: int, stop: int, k: int, height: int,
               width: int, table, num_classes: int, out, weights, acc, seen, present, status,
               info) -> None:
    """out[b] = softmax(RoIAlign(map of sample indices[positions[b]], rois[b])) for b in
    [start, stop); status[b] / info[b] report a bad stored id or score (corrupt file)."""
    for b in range(start, stop):
        roi_cell_weights(rois[b, 0], rois[b, 1], rois[b, 2], rois[b, 3], height, width, weights)
        status[b] = _pool_one(data, ptrs[indices[positions[b]]], k, height, width, table,
                              weights, num_classes, acc, seen, present, out[b], info, b)


# -- the decoder ---------------------------------------------------------------------------------

class LabelMapPool(Decoder):
    """LabelMapField -> float32 [B, num_classes] soft targets pooled over each crop.

    image: the image field whose crop boxes (and flips) the targets follow; its pipeline must
      start with an image decoder (RandomResizedCrop, CenterCrop, SimpleRGBImageDecoder).
    num_classes: C; every stored class id must be below it.
    transposed_box: pool the reference code's box, rows in the x slot (see module docs).
    view: with a MultiView image pipeline, the view whose crops the targets follow (default 0).

    Use: ``pipelines={'image': [RandomResizedCrop(224), RandomHorizontalFlip(), ...],
    'relabel': [LabelMapPool(image='image'), ToTensor()]}``.  It reads the image field's crops
    (``reads``), so the Loader prepares it after that field's decoder.  Given to
    ``Mixup(region_target=pool)``, it labels each CutMix region from the partner's own map
    (``region_target``); ``fastdata.presets.relabel_cutmix`` wires both.
    """

    parallel = True
    task_size = 64          # ~10 us a sample: a few tasks a batch, not 64

    def __init__(self, image: str = "image", num_classes: int = 1000,
                 transposed_box: bool = False, view: int = 0):
        if isinstance(num_classes, bool) or not 1 <= int(num_classes) <= MAX_CLASS_ID + 1:
            raise ValueError(f"num_classes must be in [1, {MAX_CLASS_ID + 1}], got {num_classes}")
        if isinstance(view, bool) or int(view) < 0:
            raise ValueError(f"view must be a non-negative view number, got {view!r}")
        self.image = image
        self.num_classes = int(num_classes)
        self.transposed_box = bool(transposed_box)
        self.view = int(view)

    field_types = (LabelMapField,)

    @property
    def reads(self) -> tuple[str, ...]:
        return (self.image,)

    def bind(self, reader, name: str, field_index: int) -> None:
        super().bind(reader, name, field_index)     # checks the field type
        field = reader.fields[name]
        if self.image not in reader.fields:
            raise ValueError(f"LabelMapPool(image={self.image!r}): the file has no field "
                             f"{self.image!r} (fields: {reader.field_names})")
        if not isinstance(reader.fields[self.image], RGBImageField):
            raise TypeError(f"LabelMapPool(image={self.image!r}): field {self.image!r} is a "
                            f"{type(reader.fields[self.image]).__name__}, not an image field")
        self.field = field
        self.ptrs = reader.payload_ptrs(name).astype(np.int64)
        self.table = half_table()

    def sample_shape(self, batch_size: int):
        return (self.num_classes,), np.float32

    def _crops(self, ctx: BatchContext) -> CropView:
        """The crops of the image view this decoder follows."""
        crops = ctx.crops.get(self.image)
        if crops is None:
            raise RuntimeError(f"LabelMapPool: no crop boxes for image field {self.image!r} in "
                               f"this batch; load that field with an image decoder (its "
                               f"pipeline must not be None)")
        if self.view >= crops.views:
            raise ValueError(f"LabelMapPool(view={self.view}): image field {self.image!r} has "
                             + (f"{crops.views} views" if crops.views > 1 else "one view"))
        return crops.view(self.view)

    def _rois(self, stored_boxes: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        return map_rois(stored_boxes, sizes, self.field.height, self.field.width,
                        self.transposed_box)

    def whole_crop_rois(self, ctx: BatchContext) -> np.ndarray:
        """float32[B, 4] RoIAlign boxes (x1, y1, x2, y2, map cells) of each sample's whole
        crop."""
        crop = self._crops(ctx)
        out_h, out_w = crop.output_size
        whole = np.tile(np.array([0.0, out_h, 0.0, out_w]), (len(ctx.indices), 1))
        stored = output_region_to_stored(crop.boxes, crop.flips, (out_h, out_w), whole)
        return self._rois(stored, crop.sizes)

    def prepare(self, ctx: BatchContext, out: np.ndarray) -> None:
        self._crops(ctx)        # the image's crops must be there: fail in the producer thread

    def make_worker_state(self) -> dict:
        return self._scratch(self.batch_size)

    def _scratch(self, n: int) -> dict:
        c = self.num_classes
        return {"weights": np.zeros((self.field.height, self.field.width), dtype=np.float64),
                "acc": np.zeros(c, dtype=np.float64), "seen": np.zeros(c, dtype=np.uint8),
                "present": np.zeros(c, dtype=np.int64),
                "status": np.zeros(n, dtype=np.int64), "info": np.zeros(n, dtype=np.int64)}

    def _pool(self, indices: np.ndarray, positions: np.ndarray, rois: np.ndarray, start: int,
              stop: int, out: np.ndarray, s: dict) -> None:
        f = self.field
        pool_range(self.reader.data, self.ptrs, indices, positions, rois, start, stop, f.k,
                   f.height, f.width, self.table, self.num_classes, out, s["weights"], s["acc"],
                   s["seen"], s["present"], s["status"], s["info"])
        status = s["status"]
        if not status[start:stop].any():
            return
        for b in range(start, stop):
            if status[b] != STATUS_OK:
                index = int(indices[positions[b]])
                detail = int(s["info"][b])
                if status[b] == STATUS_BAD_ID:
                    reason = (f"stored class id {detail} is outside [0, {self.num_classes}) "
                              f"(num_classes={self.num_classes})")
                else:
                    j, rest = divmod(detail, f.height * f.width)
                    reason = (f"stored score at [k, row, col] = [{j}, {rest // f.width}, "
                              f"{rest % f.width}] is not finite")
                raise SampleError(index, self.name, reason)

    def decode_range(self, ctx: BatchContext, start: int, stop: int, out: np.ndarray,
                     worker: dict) -> None:
        rois = self.whole_crop_rois(ctx)
        positions = np.arange(len(ctx.indices), dtype=np.int64)
        self._pool(ctx.indices, positions, rois, start, stop, out, worker)

    def region_target(self, ctx: BatchContext, partner_positions: Any, boxes: Any):
        """torch float32 [n, C]: for each k, the soft label of the region (y0, y1, x0, x1) of
        ``boxes[k]`` (output pixels) as sample ``partner_positions[k]`` of this batch shows it:
        the region is mapped back through that sample's flip and crop to its stored image and
        pooled from its own label map (RoIAlign 1 x 1 + softmax, as the whole-crop target)."""
        import torch
        crop = self._crops(ctx)
        n = len(ctx.indices)
        partners = as_numpy(partner_positions, "partner_positions").astype(np.int64).reshape(-1)
        regions = as_numpy(boxes, "boxes").astype(np.float64)
        if regions.ndim != 2 or regions.shape[1] != 4 or len(regions) != len(partners):
            raise ValueError(f"boxes must be [{len(partners)}, 4] (y0, y1, x0, x1), got "
                             f"{tuple(regions.shape)}")
        if len(partners) and (partners.min() < 0 or partners.max() >= n):
            raise ValueError(f"partner positions must be in [0, {n})")
        out_h, out_w = crop.output_size
        y0, y1, x0, x1 = regions.T if len(regions) else (np.zeros(0),) * 4
        bad = ~(np.isfinite(regions).all(axis=1) & (0 <= y0) & (y0 <= y1) & (y1 <= out_h)
                & (0 <= x0) & (x0 <= x1) & (x1 <= out_w))
        if bad.any():
            k = int(np.argmax(bad))
            raise ValueError(f"box {k} {regions[k].tolist()} is not a (y0, y1, x0, x1) region "
                             f"of the {out_h}x{out_w} output")
        stored = output_region_to_stored(crop.boxes[partners], crop.flips[partners],
                                         (out_h, out_w), regions)
        rois = self._rois(stored, crop.sizes[partners])
        out = np.empty((len(partners), self.num_classes), dtype=np.float32)
        self._pool(ctx.indices, partners, rois, 0, len(partners), out,
                   self._scratch(len(partners)))
        return torch.from_numpy(out)


@register_default_decoder
class LabelMapDecoder(Decoder):
    """LabelMapField -> the raw maps, float32 [B, 2, k, H, W] (row 0 scores, row 1 class ids),
    the layout of ReLabel's files (for custom pooling, or to inspect)."""

    field_types = (LabelMapField,)

    def bind(self, reader, name: str, field_index: int) -> None:
        super().bind(reader, name, field_index)
        self.field = reader.fields[name]
        self.ptrs = reader.payload_ptrs(name).astype(np.int64)

    def sample_shape(self, batch_size: int):
        return (2, *self.field.map_shape), np.float32

    def prepare(self, ctx: BatchContext, out: np.ndarray) -> None:
        _gather_maps(self.reader.data, self.ptrs, ctx.indices, self.field.cells, half_table(),
                     out.reshape(len(out), 2, -1))


@njit(cache=True, nogil=True)
def _gather_maps(data, ptrs, indices, cells: int, table, out) -> None:
    for b in range(len(indices)):
        ptr = ptrs[indices[b]]
        for e in range(cells):
            lo = np.int64(data[ptr + 2 * e])
            hi = np.int64(data[ptr + 2 * e + 1])
            cid = lo | (hi << 8)
            if cid >= 32768:
                cid -= 65536
            out[b, 1, e] = np.float32(cid)
            q = ptr + 2 * cells + 2 * e
            out[b, 0, e] = table[np.int64(data[q]) | (np.int64(data[q + 1]) << 8)]


__all__ = ["LabelMapPool", "LabelMapDecoder", "roi_cell_weights", "map_rois",
           "output_region_to_stored", "half_table"]
