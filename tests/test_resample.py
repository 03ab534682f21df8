"""fastdata.pixels.resample: the Numba crop-resize kernel vs its numpy reference, PIL and torch."""
import threading

import numpy as np
import pytest
from PIL import Image

from fastdata.pixels.resample import (new_scratch, resize_crop_into, resize_crop_paste_into,
                                      scratch_size)
from oracles import resize_crop_reference


def photo(rng, h, w):
    """Photo-like RGB: smooth gradients and waves plus sensor-like noise (PIL and the reference
    round differently, so pure noise would exaggerate differences no photo shows)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([
        255 * yy / max(h - 1, 1),
        128 + 90 * np.sin(xx / 17.0 + yy / 29.0),
        255 * xx / max(w - 1, 1) * (0.5 + 0.5 * np.cos(yy / 11.0)),
    ], axis=-1)
    return np.clip(base + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)


def noise(rng, h, w):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def kernel(src, box, out_h, out_w, flip=False, within_box=True):
    # NaN-filled scratch of exactly the documented size: reading any unwritten slot would show.
    scratch = np.full(scratch_size(out_h, out_w, src.shape[0], src.shape[1]), np.nan, np.float32)
    dst = np.zeros((out_h, out_w, 3), np.uint8)
    resize_crop_into(src, *(float(v) for v in box), dst, flip, scratch, within_box)
    return dst


def random_boxes(rng, H, W, n):
    """(y0, x0, h, w) boxes: integer, fractional (DCT-scaled), at each border, full image, tiny."""
    boxes = [(0, 0, H, W), (0, 0, 1, 1), (H - 1, W - 1, 1, 1), (0, 0, 1, W), (0, 0, H, 1),
             (H / 3, W / 4, 1, min(W, 7) * 0.75)]
    for k in range(n):
        h = rng.uniform(0.5, H) if k % 3 else float(rng.integers(1, H + 1))
        w = rng.uniform(0.5, W) if k % 3 else float(rng.integers(1, W + 1))
        y0 = rng.uniform(0, H - h) if k % 3 else float(rng.integers(0, H - int(h) + 1))
        x0 = rng.uniform(0, W - w) if k % 3 else float(rng.integers(0, W - int(w) + 1))
        if k % 5 == 1:
            y0 = 0.0  # top / left borders
            x0 = 0.0
        elif k % 5 == 2:
            y0 = H - h  # bottom / right borders
            x0 = W - w
        boxes.append((y0, x0, h, w))
    return boxes


def diff(a, b):
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return int(d.max()), float(d.mean())


@pytest.mark.parametrize("within_box", [True, False])
@pytest.mark.parametrize("H,W", [(375, 500), (37, 23), (1, 1), (1, 40), (40, 1)])
def test_kernel_matches_reference(H, W, within_box):
    rng = np.random.default_rng(H * 1000 + W)
    src = noise(rng, H, W)
    total, count = 0.0, 0
    for i, box in enumerate(random_boxes(rng, H, W, 12 if H * W > 10000 else 25)):
        for out_h, out_w in [(1, 1), (224, 224), (7, 13), (64, 3)]:
            flip = bool((i + out_w) % 2)
            got = kernel(src, box, out_h, out_w, flip, within_box)
            ref = resize_crop_reference(src, *box, out_h, out_w, flip, within_box)
            mx, mean = diff(got, ref)
            assert mx <= 1, (box, out_h, out_w, flip)
            total, count = total + mean, count + 1
    # float32 and float64 only disagree on (near-)ties: sums within ~1e-5 of k + 0.5.
    assert total / count < 0.01


@pytest.mark.parametrize("H,W", [(375, 500), (500, 333), (64, 48)])
def test_reference_and_kernel_match_pil(H, W):
    """within_box=False is PIL's resize(box=...): its filter reads past the box."""
    rng = np.random.default_rng(H + W)
    src = photo(rng, H, W)
    pil = Image.fromarray(src)
    sizes = [(224, 224), (160, 128), (32, 32), (1, 1), (300, 257)]
    for i, box in enumerate(random_boxes(rng, H, W, 12)):
        y0, x0, h, w = box
        out_h, out_w = sizes[i % len(sizes)]
        want = np.asarray(pil.resize((out_w, out_h), Image.BILINEAR, box=(x0, y0, x0 + w, y0 + h)))
        for got in (resize_crop_reference(src, *box, out_h, out_w, within_box=False),
                    kernel(src, box, out_h, out_w, within_box=False)):
            mx, mean = diff(got, want)
            assert mx <= 3 and mean <= 1.0, (box, out_h, out_w, mx, mean)


def _integer_crops(rng, H, W):
    crops = [(0, 0, H, W), (10, 20, 100, 100), (H - 50, W - 70, 50, 70)]
    for _ in range(6):
        h, w = int(rng.integers(8, H)), int(rng.integers(8, W))
        crops.append((int(rng.integers(0, H - h)), int(rng.integers(0, W - w)), h, w))
    return crops


@pytest.mark.parametrize("image", [photo, noise])
def test_matches_torchvision_resized_crop_to_the_border(image):
    """On integer boxes the kernel is torchvision's resized_crop(antialias=True) (crop, then
    resize): within 1 level on every pixel, the border rows and columns included (the filter
    reads no pixel outside the box), thin and upscaled crops too."""
    import torch
    import torchvision.transforms.v2.functional as tvf
    rng = np.random.default_rng(7)
    src = image(rng, 375, 500)
    img = torch.from_numpy(src).permute(2, 0, 1)
    crops = _integer_crops(rng, 375, 500) + [(5, 7, 3, 4), (100, 100, 1, 9), (0, 0, 375, 1)]
    means = []
    for top, left, height, width in crops:
        for size in [(224, 224), (64, 96), (400, 300), (160, 160)]:
            want = tvf.resized_crop(img, top, left, height, width, list(size), antialias=True)
            mx, mean = diff(kernel(src, (top, left, height, width), *size),
                            want.permute(1, 2, 0).numpy())
            assert mx <= 1, (top, left, height, width, size)
            means.append(mean)
    assert np.mean(means) < 0.2


def test_flip_is_exact_mirror():
    rng = np.random.default_rng(3)
    src = noise(rng, 120, 90)
    for box in random_boxes(rng, 120, 90, 20):
        for out_h, out_w in [(224, 224), (5, 1), (1, 6), (33, 17)]:
            plain = kernel(src, box, out_h, out_w, False)
            assert np.array_equal(kernel(src, box, out_h, out_w, True), plain[:, ::-1])


def test_views_with_contiguous_rows():
    """src may be a view into a bigger decode buffer and dst a view into a batch buffer."""
    rng = np.random.default_rng(4)
    decoded = photo(rng, 250, 400)
    src = decoded[:200, 50:350]
    batch = np.zeros((2, 64, 100, 3), np.uint8)
    dst = batch[1, :, 10:90]  # the row stride is not out_w * 3
    scratch = new_scratch(64, 80, 200, 300)
    resize_crop_into(src, 12.5, 30.25, 150.0, 201.0, dst, True, scratch)
    want = kernel(np.ascontiguousarray(src), (12.5, 30.25, 150.0, 201.0), 64, 80, True)
    assert np.array_equal(dst, want)
    assert not batch[0].any() and not batch[1, :, :10].any() and not batch[1, :, 90:].any()
    with pytest.raises(ValueError):
        resize_crop_into(decoded[:, ::2], 0.0, 0.0, 10.0, 10.0, dst, False, scratch)


def test_box_clamped_to_image_and_bad_boxes_rejected():
    rng = np.random.default_rng(5)
    src = noise(rng, 50, 60)
    exact = kernel(src, (10.0, 0.0, 40.0, 60.0), 32, 32)
    assert np.array_equal(kernel(src, (10.0, -1e-9, 40.0 + 1e-9, 60.0 + 2e-9), 32, 32), exact)
    assert np.array_equal(resize_crop_reference(src, 10.0, -1e-9, 40.0 + 1e-9, 60.0 + 2e-9, 32, 32),
                          resize_crop_reference(src, 10.0, 0.0, 40.0, 60.0, 32, 32))
    for box in [(0.0, 0.0, 0.0, 10.0), (50.0, 0.0, 5.0, 5.0), (0.0, 60.0, 5.0, 5.0)]:
        with pytest.raises(ValueError):
            kernel(src, box, 8, 8)


@pytest.mark.parametrize("flip", [False, True])
def test_paste_sends_exactly_the_region_to_the_other_output(flip):
    """resize_crop_paste_into = resize_crop_into, with output region rows y0:y1, columns x0:x1
    (after the flip; odd sizes, odd bounds) written to paste_dst and left untouched in dst."""
    src = photo(np.random.default_rng(3), 90, 110)
    box, (h, w) = (5.5, 7.25, 70.0, 90.0), (33, 41)
    whole = kernel(src, box, h, w, flip)
    for y0, y1, x0, x1 in [(3, 20, 5, 40), (0, h, 0, w), (32, 33, 40, 41), (10, 10, 0, w)]:
        dst = np.full((h, w, 3), 7, np.uint8)
        other = np.full((h, w, 3), 9, np.uint8)
        resize_crop_paste_into(src, *box, dst, flip, new_scratch(h, w, 90, 110), other,
                               y0, y1, x0, x1, True)
        inside = np.zeros((h, w), bool)
        inside[y0:y1, x0:x1] = True
        assert np.array_equal(dst[~inside], whole[~inside]) and (dst[inside] == 7).all()
        assert np.array_equal(other[inside], whole[inside]) and (other[~inside] == 9).all()
    scratch = new_scratch(h, w, 90, 110)
    for region, target in [((0, h + 1, 0, 5), np.zeros((h, w, 3), np.uint8)),
                           ((-1, 3, 0, 5), np.zeros((h, w, 3), np.uint8)),
                           ((0, 3, 0, 5), np.zeros((h, w + 1, 3), np.uint8))]:
        with pytest.raises(ValueError):
            resize_crop_paste_into(src, *box, np.zeros((h, w, 3), np.uint8), flip, scratch,
                                   target, *region, True)


def test_scratch_too_small_is_rejected():
    src = np.zeros((50, 60, 3), np.uint8)
    scratch = np.zeros(scratch_size(8, 8, 50, 60) - 1, np.float32)
    with pytest.raises(ValueError):
        resize_crop_into(src, 0.0, 0.0, 50.0, 60.0, np.zeros((8, 8, 3), np.uint8), False, scratch)


def test_no_allocation_per_call():
    """Counts Numba runtime allocations around a jitted loop of n calls: only the loop's own
    argument unboxing at the Python boundary may allocate, so the count must not grow with n."""
    numba = pytest.importorskip("numba")
    from numba.core.runtime import rtsys
    try:
        from numba.core.runtime import _nrt_python
        enable, disable = _nrt_python.memsys_enable_stats, _nrt_python.memsys_disable_stats
    except (ImportError, AttributeError):
        pytest.skip("this Numba has no runtime allocation statistics")

    @numba.njit(nogil=True)
    def calls(src, dst, scratch, n):
        for k in range(n):
            resize_crop_into(src, 1.5 + k, 2.25, 90.0 - k, 100.0, dst, k % 2 == 1, scratch)

    src = noise(np.random.default_rng(9), 100, 120)
    dst = np.zeros((40, 30, 3), np.uint8)
    scratch = new_scratch(40, 30, 100, 120)
    calls(src, dst, scratch, 1)  # compile
    enable()
    try:
        counts = []
        for n in (1, 20):
            before = rtsys.get_allocation_stats()
            calls(src, dst, scratch, n)
            after = rtsys.get_allocation_stats()
            counts.append((after.alloc - before.alloc, after.mi_alloc - before.mi_alloc))
    finally:
        disable()
    assert counts[0] == counts[1]


def test_releases_gil_and_is_thread_safe():
    assert resize_crop_into.targetoptions.get("nogil")
    rng = np.random.default_rng(6)
    src = photo(rng, 375, 500)
    jobs = [[(b, 224, 224) for b in random_boxes(rng, 375, 500, 30)],
            [(b, 96, 160) for b in random_boxes(rng, 375, 500, 30)]]
    expected = [[kernel(src, *job) for job in js] for js in jobs]
    results = [None, None]

    def work(k):
        out_h, out_w = jobs[k][0][1:]
        scratch = new_scratch(out_h, out_w, 375, 500)
        outs = []
        for _ in range(5):
            for box, out_h, out_w in jobs[k]:
                dst = np.empty((out_h, out_w, 3), np.uint8)
                resize_crop_into(src, *box, dst, False, scratch)
                outs.append(dst)
        results[k] = outs

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(2):
        assert len(results[k]) == 5 * len(jobs[k])
        for i, out in enumerate(results[k]):
            assert np.array_equal(out, expected[k][i % len(jobs[k])])
