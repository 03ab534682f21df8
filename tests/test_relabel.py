"""ReLabel localized soft labels: the label-map field, reading the released map files, and
LabelPooling (RoIAlign 1x1 + softmax) in the loader, checked against a numpy transcription of
torchvision's roi_align CPU kernel (and torchvision itself when it is installed)."""
import os
import pickle

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from fastdata import DatasetWriter, FormatError, IntField, Loader, Reader, RGBImageField  # noqa
from fastdata import format as fmt  # noqa: E402
from fastdata.cli import main  # noqa: E402
from fastdata.fields import TYPE_IDS, LabelMap, LabelMapField  # noqa: E402
from fastdata.ops import (IntDecoder, RandomHorizontalFlip, RandomResizedCrop, Squeeze,  # noqa
                          ToTensor, ToTorchImage)
from fastdata.ops.base import BatchContext  # noqa: E402
from fastdata.ops.crops import CropParams  # noqa: E402
from fastdata.ops.relabel import LabelMapDecoder, LabelMapPool, roi_cell_weights  # noqa: E402
from fastdata.reader import SampleError  # noqa: E402
from fastdata.writers.relabel import load_label_map  # noqa: E402

C = 40          # classes in the synthetic maps
f32 = np.float32


# -- references ----------------------------------------------------------------------------------

def roi_align_reference(dense: np.ndarray, box) -> np.ndarray:
    """torchvision.ops.roi_align(dense[None], [box], output_size=(1, 1), spatial_scale=1,
    sampling_ratio=-1, aligned=False)[0, :, 0, 0], transcribed from its CPU kernel
    (roi_align_kernel.cpp / roi_align_common.h): float32 geometry, float64 sums here."""
    channels, height, width = dense.shape
    x1, y1, x2, y2 = (f32(v) for v in box)
    roi_w = max(f32(x2 - x1), f32(1.0))
    roi_h = max(f32(y2 - y1), f32(1.0))
    grid_h, grid_w = int(np.ceil(roi_h)), int(np.ceil(roi_w))
    count = max(grid_h * grid_w, 1)
    total = np.zeros(channels, dtype=np.float64)
    for iy in range(grid_h):
        yy = f32(y1 + f32(0.0) * roi_h) + f32(iy + 0.5) * roi_h / f32(grid_h)
        for ix in range(grid_w):
            xx = f32(x1 + f32(0.0) * roi_w) + f32(ix + 0.5) * roi_w / f32(grid_w)
            if not (yy >= -1.0 and yy <= height and xx >= -1.0 and xx <= width):
                continue       # outside: contributes 0, still counted
            y, x = (f32(0.0) if yy <= 0 else yy), (f32(0.0) if xx <= 0 else xx)
            y_low, x_low = int(y), int(x)
            if y_low >= height - 1:
                y_high = y_low = height - 1
                y = f32(y_low)
            else:
                y_high = y_low + 1
            if x_low >= width - 1:
                x_high = x_low = width - 1
                x = f32(x_low)
            else:
                x_high = x_low + 1
            ly, lx = f32(y - y_low), f32(x - x_low)
            hy, hx = f32(1.0) - ly, f32(1.0) - lx
            total += (hy * hx * dense[:, y_low, x_low].astype(np.float64)
                      + hy * lx * dense[:, y_low, x_high] + ly * hx * dense[:, y_high, x_low]
                      + ly * lx * dense[:, y_high, x_high])
    return total / count


def densify(label_map: LabelMap, num_classes: int) -> np.ndarray:
    """The reference's zero-filled C x H x W map (scatter of the top-k scores)."""
    k, h, w = label_map.ids.shape
    dense = np.zeros((num_classes, h, w), dtype=np.float32)
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    for j in range(k):
        dense[label_map.ids[j].astype(np.int64), rows, cols] = label_map.scores[j]
    return dense


def reference_box(box, size, map_h, map_w, transposed=False):
    """ReLabel's roi: (i/H, j/W, i/H + h/H, j/W + w/W) in float64 -> float32, * cells - 0.5."""
    top, left, height, width = (float(v) for v in box)
    img_h, img_w = float(size[0]), float(size[1])
    t, l = top / img_h, left / img_w
    b, r = t + height / img_h, l + width / img_w
    t, l, b, r = (f32(v) for v in (t, l, b, r))
    if transposed:
        corners = (t * f32(map_w), l * f32(map_h), b * f32(map_w), r * f32(map_h))
    else:
        corners = (l * f32(map_w), t * f32(map_h), r * f32(map_w), b * f32(map_h))
    return tuple(f32(v - f32(0.5)) for v in corners)


def softmax(v: np.ndarray) -> np.ndarray:
    e = np.exp(v - v.max())
    return e / e.sum()


def reference_target(label_map, box, size, num_classes=C, transposed=False):
    k, h, w = label_map.ids.shape
    dense = densify(label_map, num_classes)
    return softmax(roi_align_reference(dense, reference_box(box, size, h, w, transposed)))


# -- synthetic data ------------------------------------------------------------------------------

def random_map(rng, k=5, h=15, w=15, num_classes=C) -> np.ndarray:
    """float32 [2, k, h, w] as ReLabel's files: scores (logit-like), distinct ids per cell."""
    ids = rng.random((num_classes, h, w)).argsort(axis=0)[:k].astype(np.float32)
    scores = np.sort(rng.normal(0, 3, (k, h, w)), axis=0)[::-1].astype(np.float32)
    return np.stack([scores, ids])


def image(rng, h, w):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def beton(tmp_path_factory):
    """Images of assorted sizes (raw and JPEG, some shrunk by max_resolution), labels, maps."""
    rng = np.random.default_rng(1)
    path = str(tmp_path_factory.mktemp("relabel") / "relabel.beton")
    samples = []
    for i in range(48):
        h, w = int(rng.integers(20, 140)), int(rng.integers(20, 140))
        samples.append((image(rng, h, w), i, random_map(rng)))
    fields = {"image": RGBImageField(write_mode="proportion", max_resolution=100),
              "label": IntField(), "relabel": LabelMapField()}
    DatasetWriter(path, fields, page_size=1 << 21, num_workers=2, progress=False) \
        .from_indexed_dataset(samples)
    return path


def bound_pool(reader, **kwargs):
    pool = LabelMapPool(**kwargs)
    pool.bind(reader, "relabel", reader.field_names.index("relabel"))
    return pool


def pool_batch(reader, pool, indices, boxes, flips=None, output_size=(32, 32)):
    """Run the decoder on a hand-made batch: returns (ctx, targets)."""
    indices = np.asarray(indices, dtype=np.int64)
    n = len(indices)
    column = reader.metadata[f"f{reader.field_names.index('image')}"]
    sizes = np.stack([column["height"][indices], column["width"][indices]], 1).astype(np.int64)
    ctx = BatchContext(indices=indices, epoch=0, seed=0, slot=0)
    ctx.crops["image"] = CropParams.single_view(
        np.asarray(boxes, dtype=np.int64).reshape(n, 4),
        np.zeros(n, np.uint8) if flips is None else np.asarray(flips, np.uint8),
        sizes, sizes, output_size)
    pool.batch_size = n
    out = np.full((n, pool.num_classes), np.nan, dtype=np.float32)
    pool.prepare(ctx, out)
    pool.decode_range(ctx, 0, n, out, pool.make_worker_state())
    return ctx, out


def stored_size(reader, i):
    record = reader.metadata[i][f"f{reader.field_names.index('image')}"]
    return int(record["height"]), int(record["width"])


def random_boxes(reader, rng, indices):
    """A random (top, left, height, width) box inside each sample's stored image."""
    boxes = []
    for i in indices:
        h, w = stored_size(reader, i)
        bh, bw = int(rng.integers(1, h + 1)), int(rng.integers(1, w + 1))
        boxes.append((int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1)),
                      bh, bw))
    return boxes


# -- the field -----------------------------------------------------------------------------------

@pytest.mark.parametrize("k,h,w", [(5, 15, 15), (1, 1, 1), (3, 7, 11), (8, 2, 30)])
def test_field_round_trip_any_shape(tmp_path, k, h, w):
    rng = np.random.default_rng(k * 100 + h)
    maps = [random_map(rng, k, h, w, num_classes=max(k, 2000)) for _ in range(5)]
    maps[1][1, 0, 0, 0] = 32767                      # the largest id int16 holds
    values = [maps[0], (maps[1][0], maps[1][1].astype(np.int64)), torch.from_numpy(maps[2]),
              (torch.from_numpy(maps[3][0]).half(), torch.from_numpy(maps[3][1]).long()),
              LabelMap(maps[4][0].astype(np.float16), maps[4][1].astype(np.int16))]
    path = str(tmp_path / "maps.beton")
    DatasetWriter(path, {"relabel": LabelMapField(k, h, w), "label": IntField()},
                  progress=False, num_workers=1).from_indexed_dataset(
        [(v, i) for i, v in enumerate(values)])
    with Reader(path) as reader:
        field = reader.fields["relabel"]
        assert isinstance(field, LabelMapField) and field.map_shape == (k, h, w)
        assert repr(field) == f"LabelMapField(k={k}, height={h}, width={w})"
        assert reader.payload_sizes("relabel").tolist() == [4 * k * h * w] * 5
        for i, source in enumerate(maps):
            got = reader.read(i, "relabel")
            assert got.scores.dtype == np.float16 and got.ids.dtype == np.int16
            assert got.scores.shape == got.ids.shape == (k, h, w)
            np.testing.assert_array_equal(got.ids, source[1].astype(np.int16))
            np.testing.assert_array_equal(got.scores, source[0].astype(np.float16))
            np.testing.assert_array_equal(got.to_array(), np.stack(
                [source[0].astype(np.float16).astype(np.float32), source[1]]))
        # payload layout: ids int16 then scores float16, little-endian
        raw = reader.payload(0, "relabel").tobytes()
        assert raw == (maps[0][1].astype("<i2").tobytes() + maps[0][0].astype("<f2").tobytes())


def test_field_arguments_round_trip_and_reject_garbage():
    args = LabelMapField(3, 4, 6).to_arguments()
    assert bytes(args[:4]) == b"FDLM" and len(args) == fmt.ARGUMENTS_SIZE
    assert LabelMapField.from_arguments(args).map_shape == (3, 4, 6)
    with pytest.raises(FormatError, match="do not start with"):
        LabelMapField.from_arguments(np.zeros(fmt.ARGUMENTS_SIZE, np.uint8))
    zero_k = args.copy()
    zero_k[8:12] = 0
    with pytest.raises(FormatError, match="k must be a positive integer"):
        LabelMapField.from_arguments(zero_k)
    huge = args.copy()
    huge[8:20] = 255
    with pytest.raises(FormatError, match="too large"):
        LabelMapField.from_arguments(huge)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="positive integer"):
            LabelMapField(k=bad)


@pytest.mark.parametrize("mutate,message", [
    (lambda m: m[:, :, :14], r"label map of shape \(2, 5, 14, 15\), the field expects "
                             r"\(2, 5, 15, 15\)"),
    (lambda m: m[0], r"label map of shape \(5, 15, 15\)"),
    (lambda m: _set(m, (0, 2, 3, 4), np.nan), r"score nan at \[k, row, col\] = \[2, 3, 4\] is "
                                               r"not finite"),
    (lambda m: _set(m, (0, 0, 0, 1), np.inf), r"score inf .* not finite"),
    (lambda m: _set(m, (0, 0, 0, 1), 1e6), "overflows float16"),
    (lambda m: _set(m, (1, 1, 2, 3), 2.5), r"class id 2.5 at \[1, 2, 3\] is not a whole number"),
    (lambda m: _set(m, (1, 0, 0, 0), -1), r"class id -1 at \[0, 0, 0\] is outside \[0, 32767\]"),
    (lambda m: _set(m, (1, 0, 0, 0), 40000), r"class id 40000 .* outside"),
    (lambda m: _set(m, (1, 1, 5, 6), m[1, 0, 5, 6]), r"appears more than once at cell "
                                                     r"\(row 5, col 6\)"),
    (lambda m: (m[0], m[1, :4]), r"label map ids have shape \(4, 15, 15\)"),
    (lambda m: np.array(["x"] * 2250).reshape(2, 5, 15, 15), "must hold real numbers"),
])
def test_field_rejects_bad_maps_clearly(mutate, message):
    good = random_map(np.random.default_rng(0))
    with pytest.raises((ValueError, TypeError), match=message):
        LabelMapField().encode(mutate(good.copy()), 0)


def _set(array, at, value):
    array[at] = value
    return array


def test_reader_checks_sizes_at_open_and_unknown_type_ids(tmp_path, beton):
    # A descriptor claiming larger maps than were stored: refused at open, naming the field.
    with open(beton, "rb") as f:
        data = bytearray(f.read())
    with Reader(beton) as reader:
        k = reader.field_names.index("relabel")
    desc = fmt.HEADER_SIZE + k * fmt.FIELD_DESC_SIZE
    bigger = bytearray(data)
    args_at = desc + 1 + fmt.FIELD_NAME_SIZE
    bigger[args_at + 8:args_at + 12] = (6).to_bytes(4, "little")      # k = 6 instead of 5
    path = tmp_path / "bigger.beton"
    path.write_bytes(bytes(bigger))
    with pytest.raises(FormatError, match=r"field 'relabel': value of 5400 bytes does not fit "
                                          r"its allocated region of 4500 bytes"):
        Reader(path)
    # An id this fastdata does not know: a clear error, nothing misread.
    assert TYPE_IDS[100] is LabelMapField and 200 not in TYPE_IDS
    unknown = bytearray(data)
    unknown[desc] = 200
    path = tmp_path / "unknown.beton"
    path.write_bytes(bytes(unknown))
    with pytest.raises(FormatError, match=r"field 'relabel' has unknown type id 200 \(written "
                                          r"by a newer fastdata\?\)"):
        Reader(path)


# -- the released map files ----------------------------------------------------------------------

class Planted:
    """Unpickling this would create a file: weights_only must refuse it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def _write_bad_maps(folder, rng):
    os.makedirs(folder, exist_ok=True)
    good = torch.from_numpy(random_map(rng))
    cases = {}

    def save(name, obj, reason):
        path = os.path.join(folder, name + ".pt")
        torch.save(obj, path)
        cases[path] = reason

    save("wrong_shape", good[:, :, :, :14].clone(), r"tensor of shape \[2, 5, 15, 14\], "
                                                    r"expected \[2, 5, 15, 15\]")
    save("three_dims", good[0].clone(), r"tensor of shape \[5, 15, 15\]")
    nan = good.clone()
    nan[0, 1, 2, 3] = float("nan")
    save("nan", nan, "holds NaN or infinite values")
    save("ints", good.long(), "tensor of dtype torch.int64, expected float16 or float32")
    save("dict", {"map": good}, "holds a dict, not a tensor")
    bad_id = good.clone()
    bad_id[1, 0, 0, 0] = 1.5
    save("bad_id", bad_id, r"class id 1.5 .* not a whole number")
    marker = os.path.join(folder, "UNPICKLED")
    with open(os.path.join(folder, "evil.pt"), "wb") as f:
        pickle.dump(Planted(marker), f)
    cases[os.path.join(folder, "evil.pt")] = r"torch.load\(weights_only=True\) refused it"
    with open(os.path.join(folder, "garbage.pt"), "wb") as f:
        f.write(b"not a torch file at all")
    cases[os.path.join(folder, "garbage.pt")] = "refused it|not a readable torch.save file"
    with open(os.path.join(folder, "empty.pt"), "wb"):
        pass
    cases[os.path.join(folder, "empty.pt")] = "empty or truncated"
    cases[os.path.join(folder, "missing.pt")] = r"no such file \(missing label map\)"
    return cases, marker


def test_map_files_load_checked_with_per_file_errors(tmp_path):
    rng = np.random.default_rng(3)
    for dtype in (torch.float32, torch.float16):
        path = str(tmp_path / f"good_{dtype}.pt")
        source = random_map(rng)
        torch.save(torch.from_numpy(source).to(dtype), path)
        got = load_label_map(path, LabelMapField())
        np.testing.assert_array_equal(got.ids, source[1])
        np.testing.assert_array_equal(got.scores, source[0].astype(np.float16))
    cases, marker = _write_bad_maps(str(tmp_path / "bad"), rng)
    for path, reason in cases.items():
        with pytest.raises(ValueError, match=reason) as info:
            load_label_map(path, LabelMapField())
        assert str(info.value).startswith(f"relabel map {path}: ")
        assert "\n" not in str(info.value)
    assert not os.path.exists(marker), "a map file was unpickled beyond tensors"


def _imagenet_with_maps(root, rng, per_class=3):
    data, maps = os.path.join(root, "data"), os.path.join(root, "maps")
    saved = {}
    for wnid in ("n01440764", "n01443537"):
        os.makedirs(os.path.join(data, "train", wnid))
        os.makedirs(os.path.join(maps, wnid))
        for i in range(per_class):
            name = f"{wnid}_{i}"
            Image.fromarray(image(rng, int(rng.integers(30, 80)), int(rng.integers(30, 80)))) \
                .save(os.path.join(data, "train", wnid, name + ".JPEG"), quality=90)
            m = random_map(rng)
            torch.save(torch.from_numpy(m), os.path.join(maps, wnid, name + ".pt"))
            saved[(wnid, i)] = m
    return data, maps, saved


def test_cli_writes_relabel_field(tmp_path, capsys):
    rng = np.random.default_rng(4)
    data, maps, saved = _imagenet_with_maps(str(tmp_path), rng)
    out = str(tmp_path / "train.beton")
    assert main(["write", "imagenet", "--data-dir", data, "--out", out, "--relabel-maps", maps,
                 "--workers", "2", "--quiet"]) == 0
    assert "wrote 6 samples" in capsys.readouterr().out
    with Reader(out) as reader:
        assert reader.field_names == ["image", "label", "relabel"]
        for i in range(6):
            label = reader.read(i, "label")
            wnid = ("n01440764", "n01443537")[label]
            source = saved[(wnid, i % 3)]
            got = reader.read(i, "relabel")
            np.testing.assert_array_equal(got.ids, source[1])
            np.testing.assert_array_equal(got.scores, source[0].astype(np.float16))


def test_cli_bad_maps_skip_or_fail_naming_the_map(tmp_path, capsys):
    rng = np.random.default_rng(5)
    data, maps, _ = _imagenet_with_maps(str(tmp_path), rng)
    missing = os.path.join(maps, "n01440764", "n01440764_1.pt")
    os.unlink(missing)
    bad = os.path.join(maps, "n01443537", "n01443537_2.pt")
    nan = torch.full((2, 5, 15, 15), float("nan"))
    torch.save(nan, bad)
    out = str(tmp_path / "t.beton")
    assert main(["write", "imagenet", "--data-dir", data, "--out", out, "--relabel-maps", maps,
                 "--on-error", "skip", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 4 samples" in printed
    assert f"relabel map {missing}: no such file (missing label map)" in printed
    assert f"relabel map {bad}: holds NaN or infinite values" in printed
    with open(out + ".errors.tsv") as log:
        assert log.read().count("relabel map") == 2
    assert main(["write", "imagenet", "--data-dir", data, "--out", out, "--relabel-maps", maps,
                 "--workers", "1", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fastdata: error: ") and f"relabel map {missing}: no such file" in err
    assert main(["write", "imagenet", "--data-dir", data, "--out", out, "--relabel-maps",
                 str(tmp_path / "nowhere"), "--quiet"]) == 1
    assert "relabel maps folder" in capsys.readouterr().err


# -- pooling -------------------------------------------------------------------------------------

def test_cell_weights_full_image_and_tiny_boxes():
    w = np.zeros((15, 15))
    roi_cell_weights(f32(-0.5), f32(-0.5), f32(14.5), f32(14.5), 15, 15, w)
    np.testing.assert_allclose(w, 1 / 225, rtol=1e-12)      # exactly the 225 cell centres
    # a box smaller than a cell: roi size clamped to 1, one sample at its start + 0.5
    roi_cell_weights(f32(2.5), f32(6.5), f32(2.7), f32(6.6), 15, 15, w)
    expected = np.zeros((15, 15))
    expected[7, 3] = 1.0
    np.testing.assert_allclose(w, expected, atol=1e-7)
    roi_cell_weights(f32(3.25), f32(7.0), f32(3.3), f32(7.5), 15, 15, w)   # x 3.75, y 7.5
    expected = np.zeros((15, 15))
    expected[7, 3], expected[7, 4], expected[8, 3], expected[8, 4] = .125, .375, .125, .375
    np.testing.assert_allclose(w, expected, atol=1e-7)


def test_pooling_matches_roi_align_reference(beton):
    rng = np.random.default_rng(6)
    with Reader(beton) as reader:
        pool = bound_pool(reader, num_classes=C)
        indices, boxes = [], []
        for i in range(len(reader)):
            h, w = stored_size(reader, i)
            kind = i % 4
            if kind == 0:                          # the full image: average of 225 centres
                box = (0, 0, h, w)
            elif kind == 1:                        # tiny: clamped roi size
                top, left = int(rng.integers(0, h)), int(rng.integers(0, w))
                box = (top, left, 1, 1)
            else:
                bh, bw = int(rng.integers(1, h + 1)), int(rng.integers(1, w + 1))
                box = (int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1)), bh, bw)
            indices.append(i)
            boxes.append(box)
        boxes[1] = (0, 0, 1, 1)                    # corner cells
        h, w = stored_size(reader, 5)
        boxes[5] = (h - 1, w - 1, 1, 1)
        _, out = pool_batch(reader, pool, indices, boxes)
        for i, box in zip(indices, boxes):
            m = reader.read(i, "relabel")
            expected = reference_target(m, box, stored_size(reader, i))
            np.testing.assert_allclose(out[i], expected, rtol=1e-5, atol=1e-7)
            assert abs(float(out[i].sum()) - 1) < 1e-5
            if box[2:] == stored_size(reader, i):
                dense = densify(m, C).astype(np.float64)
                np.testing.assert_allclose(out[i], softmax(dense.mean(axis=(1, 2))), rtol=1e-5)
        dense = densify(reader.read(1, "relabel"), C)
        np.testing.assert_allclose(out[1], softmax(dense[:, 0, 0].astype(np.float64)),
                                   rtol=1e-5)
        dense = densify(reader.read(5, "relabel"), C)
        np.testing.assert_allclose(out[5], softmax(dense[:, -1, -1].astype(np.float64)),
                                   rtol=1e-5)


def test_pooling_matches_torchvision(beton):
    tv_ops = pytest.importorskip("torchvision.ops")
    rng = np.random.default_rng(7)
    with Reader(beton) as reader:
        pool = bound_pool(reader, num_classes=C)
        for transposed in (False, True):
            pool.transposed_box = transposed
            indices = np.arange(len(reader))
            boxes = random_boxes(reader, rng, indices)
            boxes[0] = (0, 0, *stored_size(reader, 0))
            _, out = pool_batch(reader, pool, indices, boxes)
            for i, box in zip(indices, boxes):
                dense = torch.from_numpy(densify(reader.read(int(i), "relabel"), C))[None]
                roi = torch.tensor([reference_box(box, stored_size(reader, i), 15, 15,
                                                  transposed)], dtype=torch.float32)
                pooled = tv_ops.roi_align(dense, [roi], output_size=(1, 1), spatial_scale=1.0,
                                          sampling_ratio=-1, aligned=False)
                expected = torch.softmax(pooled.reshape(1, -1), 1)[0].numpy()
                np.testing.assert_allclose(out[i], expected, rtol=1e-5, atol=1e-7)


def test_pooling_matches_grid_sample_bilinear(beton):
    """An independent check of the interpolation: for boxes inside the image every RoIAlign
    sample lies in [-0.5, size - 0.5], where roi_align's clamping is grid_sample's border mode
    (align_corners=True), so the target is softmax(mean of grid_sample at the sample points)."""
    functional = torch.nn.functional
    rng = np.random.default_rng(9)
    with Reader(beton) as reader:
        pool = bound_pool(reader, num_classes=C)
        indices = np.arange(20)
        boxes = random_boxes(reader, rng, indices)
        _, out = pool_batch(reader, pool, indices, boxes)
        for i, box in zip(indices, boxes):
            x1, y1, x2, y2 = reference_box(box, stored_size(reader, i), 15, 15)
            roi_w, roi_h = max(f32(x2 - x1), f32(1)), max(f32(y2 - y1), f32(1))
            gh, gw = int(np.ceil(roi_h)), int(np.ceil(roi_w))
            ys = np.array([y1 + f32(iy + 0.5) * roi_h / f32(gh) for iy in range(gh)], np.float64)
            xs = np.array([x1 + f32(ix + 0.5) * roi_w / f32(gw) for ix in range(gw)], np.float64)
            gy, gx = np.meshgrid(ys, xs, indexing="ij")
            grid = torch.from_numpy(np.stack([gx / 14 * 2 - 1, gy / 14 * 2 - 1], -1))[None]
            dense = torch.from_numpy(densify(reader.read(int(i), "relabel"), C)).double()[None]
            sampled = functional.grid_sample(dense, grid, mode="bilinear", padding_mode="border",
                                             align_corners=True)
            expected = torch.softmax(sampled.mean(dim=(2, 3))[0], 0).numpy()
            np.testing.assert_allclose(out[i], expected, rtol=1e-5, atol=1e-7)


def test_transposed_box_flag(beton):
    with Reader(beton) as reader:
        indices = np.arange(8)
        boxes = []
        for i in indices:
            h, w = stored_size(reader, i)
            boxes.append((h // 5, 0, h - h // 5, max(w // 3, 1)))     # tall, left-hugging
        plain = pool_batch(reader, bound_pool(reader, num_classes=C), indices, boxes)[1]
        swapped = pool_batch(reader, bound_pool(reader, num_classes=C, transposed_box=True),
                             indices, boxes)[1]
        for i, box in zip(indices, boxes):
            m = reader.read(int(i), "relabel")
            size = stored_size(reader, i)
            np.testing.assert_allclose(swapped[i], reference_target(m, box, size,
                                                                    transposed=True), rtol=1e-5)
            np.testing.assert_allclose(plain[i], reference_target(m, box, size), rtol=1e-5)
        assert not np.allclose(plain, swapped)


def test_softmax_fills_absent_classes_with_exp0(tmp_path):
    # every cell holds the same 3 classes: the full-image pool is their scores' mean
    scores = np.array([2.0, -1.0, 0.5], np.float32)[:, None, None] * np.ones((3, 4, 6), np.float32)
    ids = np.array([7, 0, 19], np.float32)[:, None, None] * np.ones((3, 4, 6), np.float32)
    path = str(tmp_path / "fill.beton")
    DatasetWriter(path, {"image": RGBImageField(), "relabel": LabelMapField(3, 4, 6)},
                  progress=False, num_workers=1).from_indexed_dataset(
        [(np.zeros((40, 60, 3), np.uint8), np.stack([scores, ids]))])
    with Reader(path) as reader:
        _, out = pool_batch(reader, bound_pool(reader, num_classes=25), [0], [(0, 0, 40, 60)])
    z = np.exp(2.0) + np.exp(-1.0) + np.exp(0.5) + (25 - 3)
    expected = np.full(25, 1 / z)
    expected[[7, 0, 19]] = np.exp([2.0, -1.0, 0.5]) / z
    np.testing.assert_allclose(out[0], expected, rtol=1e-6)
    assert out.dtype == np.float32 and abs(float(out[0].sum()) - 1) < 1e-6


def test_flip_keeps_the_whole_crop_label_and_mirrors_regions(beton):
    with Reader(beton) as reader:
        pool = bound_pool(reader, num_classes=C)
        indices = np.arange(6)
        boxes = [(2, 3, stored_size(reader, i)[0] - 4, stored_size(reader, i)[1] - 6)
                 for i in indices]
        ctx0, plain = pool_batch(reader, pool, indices, boxes, flips=np.zeros(6))
        ctx1, flipped = pool_batch(reader, pool, indices, boxes, flips=np.ones(6))
        np.testing.assert_array_equal(plain, flipped)     # the reference ignores the flip
        left_half = np.array([[0, 32, 0, 16]] * 6)
        right_half = np.array([[0, 32, 16, 32]] * 6)
        partners = np.arange(6)
        np.testing.assert_array_equal(pool.region_target(ctx1, partners, left_half).numpy(),
                                      pool.region_target(ctx0, partners, right_half).numpy())
        assert not np.allclose(pool.region_target(ctx0, partners, left_half).numpy(),
                               pool.region_target(ctx0, partners, right_half).numpy())


def region_reference(reader, i, crop, flip, region, output_size):
    """The partner's soft label over an output region, mapped back by hand."""
    (y0, y1, x0, x1), (oh, ow) = region, output_size
    if flip:
        x0, x1 = ow - x1, ow - x0
    top, left, h, w = crop
    box = (top + y0 * h / oh, left + x0 * w / ow, (y1 - y0) * h / oh, (x1 - x0) * w / ow)
    return reference_target(reader.read(int(i), "relabel"), box, stored_size(reader, i))


def test_region_target_matches_reference(beton):
    rng = np.random.default_rng(8)
    with Reader(beton) as reader:
        pool = bound_pool(reader, num_classes=C)
        indices = np.arange(10, 26)
        boxes, flips = [], rng.integers(0, 2, len(indices))
        for i in indices:
            h, w = stored_size(reader, i)
            bh, bw = int(rng.integers(1, h + 1)), int(rng.integers(1, w + 1))
            boxes.append((int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1)),
                          bh, bw))
        ctx, whole = pool_batch(reader, pool, indices, boxes, flips, output_size=(24, 40))
        partners = rng.permutation(len(indices))
        regions = []
        for _ in indices:
            y0, x0 = int(rng.integers(0, 24)), int(rng.integers(0, 40))
            regions.append((y0, int(rng.integers(y0, 25)), x0, int(rng.integers(x0, 41))))
        regions[0] = (0, 24, 0, 40)
        regions[1] = (3, 3, 5, 5)                # empty: still defined (clamped roi)
        got = pool.region_target(ctx, torch.from_numpy(partners), torch.tensor(regions))
        assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
        assert got.shape == (len(indices), C)
        for k, (p, region) in enumerate(zip(partners, regions)):
            expected = region_reference(reader, indices[p], boxes[p], flips[p], region, (24, 40))
            np.testing.assert_allclose(got[k].numpy(), expected, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(got[0].numpy(), whole[partners[0]])
        with pytest.raises(ValueError, match="not a \\(y0, y1, x0, x1\\) region"):
            pool.region_target(ctx, [0], [[0, 25, 0, 40]])
        with pytest.raises(ValueError, match="partner positions"):
            pool.region_target(ctx, [len(indices)], [[0, 1, 0, 1]])


def test_stored_ids_beyond_num_classes_are_a_sample_error(beton):
    with Reader(beton) as reader:
        pool = bound_pool(reader, num_classes=10)
        with pytest.raises(SampleError, match=r"sample 3, field 'relabel': stored class id \d+ "
                                              r"is outside \[0, 10\)"):
            pool_batch(reader, pool, [3], [(0, 0, *stored_size(reader, 3))])


# -- through the loader --------------------------------------------------------------------------

def test_loader_end_to_end(beton):
    pipelines = {
        "image": [RandomResizedCrop(32), RandomHorizontalFlip(), ToTensor(), ToTorchImage()],
        "label": [IntDecoder(), ToTensor(), Squeeze()],
        "relabel": [LabelMapPool(image="image", num_classes=C), ToTensor()]}
    with Reader(beton) as reader, Loader(beton, batch_size=16, num_workers=2, order="random",
                                         seed=3, pipelines=pipelines,
                                         return_params=True) as loader:
        seen = 0
        flipped = 0
        for images, labels, targets, params in loader:
            assert targets.shape == (16, C) and targets.dtype == torch.float32
            assert torch.allclose(targets.sum(1), torch.ones(16), atol=1e-5)
            for b in range(16):
                i = int(labels[b])
                box = params[b, :4].numpy()
                expected = reference_target(reader.read(i, "relabel"), box, stored_size(reader, i))
                np.testing.assert_allclose(targets[b].numpy(), expected, rtol=1e-5, atol=1e-7)
                flipped += int(params[b, 8])
            seen += 16
        assert seen == 48 and 0 < flipped < 48


def test_loader_raw_maps_and_missing_image_pipeline(beton):
    with Reader(beton) as reader, Loader(beton, batch_size=8, num_workers=1, pipelines={
            "relabel": [LabelMapDecoder(), ToTensor()], "image": None, "label": None}) as loader:
        (maps,) = next(iter(loader))
        assert maps.shape == (8, 2, 5, 15, 15) and maps.dtype == torch.float32
        for i in range(8):
            np.testing.assert_array_equal(maps[i].numpy(), reader.read(i, "relabel").to_array())
    with Loader(beton, batch_size=8, num_workers=1, pipelines={
            "relabel": [LabelMapPool(num_classes=C)], "image": None, "label": None}) as loader:
        with pytest.raises(RuntimeError, match="no crop boxes for image field 'image'"):
            next(iter(loader))
    with pytest.raises(ValueError, match="no field 'picture'"):
        Loader(beton, batch_size=8, pipelines={"relabel": [LabelMapPool(image="picture")],
                                               "image": [RandomResizedCrop(32)]})
    with pytest.raises(TypeError, match="LabelMapPool cannot decode field 'label'"):
        Loader(beton, batch_size=8, pipelines={"label": [LabelMapPool()],
                                               "image": [RandomResizedCrop(32)]})


def test_loader_multiview_follows_the_chosen_view(beton):
    from fastdata.ops.image_decoders import MultiView
    pipelines = {
        "image": [MultiView(RandomResizedCrop(32), RandomResizedCrop(24)), RandomHorizontalFlip()],
        "label": [IntDecoder(), ToTensor(), Squeeze()],
        "relabel": [LabelMapPool(num_classes=C, view=1), ToTensor()]}
    with Reader(beton) as reader, Loader(beton, batch_size=16, num_workers=2, order="random",
                                         pipelines=pipelines, return_params=True) as loader:
        for _, _, labels, targets, params0, params1 in loader:
            for b in range(16):
                i = int(labels[b])
                m, size = reader.read(i, "relabel"), stored_size(reader, i)
                np.testing.assert_allclose(targets[b].numpy(), reference_target(
                    m, params1[b, :4].numpy(), size), rtol=1e-5, atol=1e-7)
    pipelines["relabel"] = [LabelMapPool(num_classes=C, view=2)]
    with Loader(beton, batch_size=16, num_workers=1, pipelines=pipelines) as loader:
        with pytest.raises(ValueError, match="has 2 views"):
            next(iter(loader))


def test_relabel_cutmix_preset_is_the_hand_wired_loader(beton):
    """fastdata.presets.relabel_cutmix gives the batches of the four coordinated arguments
    (label=, image=, num_classes=, region_target=the pipeline's LabelMapPool) wired by hand."""
    from fastdata.ops import Mixup, ToTorchImage
    from fastdata.presets import relabel_cutmix
    pipelines, batch_ops = relabel_cutmix(C, resolution=32, mode="pair")
    preset = Loader(beton, batch_size=8, order="random", seed=2,
                    pipelines={**pipelines, "label": None}, batch_ops=batch_ops)
    pool = LabelMapPool(image="image", num_classes=C)
    by_hand = Loader(beton, batch_size=8, order="random", seed=2, pipelines={
        "image": [RandomResizedCrop(32), RandomHorizontalFlip(), ToTensor(), ToTorchImage()],
        "relabel": [pool, ToTensor()], "label": None},
        batch_ops=[Mixup(0.0, 1.0, mode="pair", label_smoothing=0.0, num_classes=C,
                         label="relabel", region_target=pool)])
    assert preset.pipeline_names == by_hand.pipeline_names == ("image", "relabel")
    batches = 0
    for (x, t), (x2, t2) in zip(preset, by_hand):
        assert torch.equal(x, x2) and torch.equal(t, t2)
        batches += 1
    assert batches == len(preset) > 0
