"""Dataset Reinforcement: the field, replay in the loader, the reinforce writer and the ImageNet+
importer."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastdata  # noqa: E402
from fastdata import DatasetWriter, FormatError, IntField, Loader, RGBImageField  # noqa: E402
from fastdata.demo import synthetic_photo  # noqa: E402
from fastdata.fields import TYPE_IDS, ReinforcementField  # noqa: E402
from fastdata.fields.reinforce import UnsupportedAugmentation, record_dtype  # noqa: E402
from fastdata.ops.replay import ReplayedCrop, ReplayTargets  # noqa: E402
from fastdata.ops.tensor import ToTensor  # noqa: E402
from fastdata.writers.reinforce import import_imagenet_plus, reinforce  # noqa: E402

N, C, K, NS, OUT = 24, 12, 3, 4, 32
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _images(n=N, seed=0):
    rng = np.random.default_rng(seed)
    return [synthetic_photo(np.random.default_rng((seed, i)), int(rng.integers(50, 110)),
                            int(rng.integers(50, 110))) for i in range(n)]


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """image (JPEG and raw, some shrunk by max_resolution: original size != stored) + label."""
    path = str(tmp_path_factory.mktemp("reinforce") / "plain.beton")
    DatasetWriter(path, {"image": RGBImageField("proportion", max_resolution=80, seed=1),
                         "label": IntField()}, page_size=1 << 21, num_workers=2,
                  progress=False).from_indexed_dataset([(im, i % C) for i, im in
                                                        enumerate(_images())])
    return path


class Teacher(torch.nn.Module):
    """A fixed random conv + linear; records every input batch it sees."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2)
        self.fc = torch.nn.Linear(8, C)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
        self.seen = []

    def forward(self, x):
        self.seen.append(x.detach().cpu().clone())
        return self.fc(self.conv(x).mean(dim=(2, 3)))


@pytest.fixture(scope="module", params=["plain", "mixed"])
def reinforced(request, plain, tmp_path_factory):
    teacher = Teacher()
    out = str(tmp_path_factory.mktemp("r") / f"{request.param}.beton")
    mix = dict(mixup_p=0.5, cutmix_p=0.5) if request.param == "mixed" else {}
    reinforce(plain, teacher, out, num_augs=NS, top_k=K, batch_size=10, device="cpu", seed=3,
              output_size=OUT, num_workers=2, progress=False, **mix)
    seen = torch.cat(teacher.seen)
    pixels = ((seen * STD + MEAN) * 255).round().clamp(0, 255).to(torch.uint8)
    return out, pixels.permute(0, 2, 3, 1).numpy().reshape(N, NS, OUT, OUT, 3), request.param


def _loader(path, densify="smooth", epoch_seed=0, batch_size=8, order="random"):
    return Loader(path, batch_size=batch_size, num_workers=2, order=order, seed=epoch_seed,
                  drop_last=False, pipelines={
                      "image": [ReplayedCrop(OUT), ToTensor()],
                      "reinforce": [ReplayTargets(C, densify, image="image"), ToTensor()],
                      "label": [fastdata.ops.IntDecoder(), ToTensor()]})


# -- the field ------------------------------------------------------------------------------------
def _dict_records(rng, h=60, w=70, partner=None):
    out = []
    for j in range(NS):
        r = {"box": (1, 2, 30, 40), "flip": j % 2, "ids": rng.choice(C, K, replace=False),
             "probs": rng.dirichlet(np.ones(C))[:K]}
        if partner is not None and j == 0:
            r.update(partner=partner, partner_box=(0, 0, 10, 10), partner_flip=True, mixup=0.25,
                     cutmix=0.5, cutmix_box=(1, 2, 5, 6))
        out.append(r)
    return out


def test_registry_and_round_trip(tmp_path):
    assert TYPE_IDS[101] is ReinforcementField
    rng = np.random.default_rng(0)
    values = [_dict_records(rng, partner=1), _dict_records(rng)]
    path = str(tmp_path / "f.beton")
    DatasetWriter(path, {"r": ReinforcementField(NS, K, (20, 30))}, page_size=1 << 21,
                  progress=False).from_indexed_dataset([(v,) for v in values])
    reader = fastdata.Reader(path)
    field = reader.fields["r"]
    assert (field.num_augs, field.top_k, field.output_size) == (NS, K, (20, 30))
    assert field.dtype.itemsize == 54 + 4 * K and not field.dtype.isalignedstruct
    recs = reader.read(0, "r")
    assert recs.dtype == record_dtype(K) and len(recs) == NS
    assert recs["box"][1].tolist() == [1, 2, 30, 40] and recs["flip"].tolist() == [0, 1, 0, 1]
    assert recs["partner"].tolist() == [1, -1, -1, -1]
    assert recs["cutmix_box"][0].tolist() == [1, 2, 5, 6] and recs["mixup"][0] == 0.25
    assert np.isnan(recs["mixup"][1]) and np.isnan(recs["cutmix"][1])
    assert recs["ids"][2].tolist() == values[0][2]["ids"].tolist()
    assert np.allclose(recs["probs"][2], values[0][2]["probs"].astype(np.float16))
    # a structured array round-trips too
    assert ReinforcementField(NS, K).as_records(recs).tobytes() == recs.tobytes()


@pytest.mark.parametrize("change, message", [
    (lambda r: r[0].update(box=(-1, 0, 5, 5)), "crop box"),
    (lambda r: r[0].update(box=(0, 0, 0, 5)), "crop box"),
    (lambda r: r[1].update(mixup=0.3), "without a partner"),
    (lambda r: r[1].update(partner=2, partner_box=(0, 0, 3, 3)), "neither mixup"),
    (lambda r: r[1].update(partner=2, partner_box=(0, 0, 3, 3), mixup=1.5), "mixup lambda"),
    (lambda r: r[2].update(ids=[1, 1, 2]), "distinct"),
    (lambda r: r[2].update(probs=[np.nan, 0.1, 0.1]), "finite"),
    (lambda r: r[3].update(rand_augment=[(1, 9.0)]), "replays crop, flip, mixup and cutmix only"),
    (lambda r: r[3].update(random_erase=(1, 1, 5, 5)), "replays crop, flip"),
    (lambda r: r.pop(), "expected 4"),
])
def test_encode_rejects(change, message):
    recs = _dict_records(np.random.default_rng(1))
    change(recs)
    with pytest.raises(ValueError, match=message):
        ReinforcementField(NS, K).encode(recs, 0)


def test_unsupported_is_its_own_error():
    recs = _dict_records(np.random.default_rng(1))
    recs[0]["random_erase"] = (0, 0, 3, 3)
    with pytest.raises(UnsupportedAugmentation):
        ReinforcementField(NS, K).encode(recs, 0)


def _write_with(tmp_path, records_of):
    images = _images(4)
    path = str(tmp_path / "bad.beton")
    DatasetWriter(path, {"image": RGBImageField("raw"), "reinforce": ReinforcementField(NS, K)},
                  page_size=1 << 21, progress=False).from_indexed_dataset(
        [(im, records_of(i, im)) for i, im in enumerate(images)])
    return path


@pytest.mark.parametrize("bad, message", [
    (dict(box=(0, 0, 500, 5)), "beyond the original image"),
    (dict(partner=99, partner_box=(0, 0, 3, 3), mixup=0.2), "partner index"),
    (dict(partner=1, partner_box=(0, 0, 3, 900), mixup=0.2), "partner's original"),
    (dict(partner=1, partner_box=(0, 0, 3, 3), cutmix=0.2, cutmix_box=(0, 0, 300, 3)),
     "cutmix box"),
])
def test_bind_validates_against_the_file(tmp_path, bad, message):
    rng = np.random.default_rng(2)

    def records_of(i, im):
        recs = _dict_records(rng)
        if i == 2:
            recs[1].update(bad)
        return recs
    path = _write_with(tmp_path, records_of)
    with pytest.raises(ValueError, match=f"sample 2, augmentation 1.*{message}"):
        Loader(path, batch_size=2, pipelines={"image": [ReplayedCrop(OUT)]})


def test_bind_checks_class_ids_and_pipeline(tmp_path):
    path = _write_with(tmp_path, lambda i, im: _dict_records(np.random.default_rng(i)))
    with pytest.raises(ValueError, match="num_classes"):
        Loader(path, batch_size=2, pipelines={"image": [ReplayedCrop(OUT)],
                                              "reinforce": [ReplayTargets(K + 1)]})
    loader = Loader(path, batch_size=2, pipelines={"image": [fastdata.ops.CenterCrop(OUT)],
                                                   "reinforce": [ReplayTargets(C)]})
    with pytest.raises(ValueError, match="ReplayedCrop"):
        next(iter(loader))
    with pytest.raises(ValueError, match="stored flip"):
        Loader(path, batch_size=2, pipelines={
            "image": [ReplayedCrop(OUT), fastdata.ops.RandomHorizontalFlip()]})


def test_unknown_type_id_is_rejected(tmp_path):
    path = _write_with(tmp_path, lambda i, im: _dict_records(np.random.default_rng(i)))
    data = bytearray(open(path, "rb").read())
    from fastdata import format as fmt
    desc = fmt.HEADER_SIZE + fmt.FIELD_DESC_DTYPE.itemsize  # field 1 = reinforce
    assert data[desc] == 101
    data[desc] = 177
    open(path, "wb").write(bytes(data))
    with pytest.raises(FormatError, match="177"):
        fastdata.Reader(path)


# -- replay ---------------------------------------------------------------------------------------
def _run_epoch(loader, epoch):
    loader.load_state_dict({"epoch": epoch, "batch": 0})
    images, targets, labels = [], [], []
    for x, lab, t in loader:
        images.append(x.numpy().copy())
        targets.append(t.numpy().copy())
        labels.append(lab.numpy().reshape(-1).copy())
    return np.concatenate(images), np.concatenate(targets), np.concatenate(labels)


def _chooser(path) -> ReplayedCrop:
    """A ReplayedCrop bound to ``path`` as the loader binds it, to ask its choose()."""
    reader = fastdata.Reader(path)
    crop = ReplayedCrop(OUT)
    crop.bind(reader, "image", reader.field_names.index("image"))
    return crop


def _chosen(crop: ReplayedCrop, seed: int, epoch: int, indices) -> np.ndarray:
    ctx = fastdata.ops.BatchContext(indices=np.asarray(indices, dtype=np.int64), epoch=epoch,
                                    seed=seed, slot=0)
    return crop.choose(ctx)


def test_choice_uniform_and_deterministic(reinforced):
    path, _, _ = reinforced
    crop = _chooser(path)
    idx = np.arange(N, dtype=np.int64)
    counts = np.zeros(NS)
    choices = []
    for epoch in range(200):
        c = _chosen(crop, 5, epoch, idx)
        assert c.dtype == np.int64 and c.min() >= 0 and c.max() < NS
        counts += np.bincount(c, minlength=NS)
        choices.append(c)
    expected = 200 * N / NS
    assert np.all(np.abs(counts - expected) < 4 * np.sqrt(expected))
    assert not np.array_equal(choices[0], choices[1])
    # a sample's choice depends on (seed, epoch, index) only: not on the rest of its batch
    perm = np.random.default_rng(0).permutation(N)
    assert np.array_equal(_chosen(crop, 5, 7, perm), choices[7][perm])
    assert np.array_equal(_chosen(crop, 5, 7, perm[:3]), choices[7][perm[:3]])
    assert np.array_equal(_chosen(_chooser(path), 5, 7, idx), choices[7])
    assert not np.array_equal(_chosen(crop, 6, 7, idx), choices[7])
    a = _run_epoch(_loader(path, epoch_seed=5), 3)
    b = _run_epoch(_loader(path, epoch_seed=5), 3)
    c = _run_epoch(_loader(path, epoch_seed=5), 4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(np.sort(a[1], axis=0), np.sort(c[1], axis=0))


def _decode_order(loader, epoch):
    return loader.epoch_indices(epoch)


@pytest.mark.parametrize("mode", ["smooth", "zeros"])
def test_replay_reproduces_the_teachers_view_and_target(reinforced, mode):
    """The loader's uint8 crop for the chosen record is, pixel for pixel, what the writer showed
    the teacher; the target is that record's densified top-k."""
    from fastdata.ops.targets import _MODE_IDS, densify
    path, seen, _ = reinforced
    reader = fastdata.Reader(path)
    loader = _loader(path, densify=mode, epoch_seed=7)
    for epoch in (0, 1):
        images, targets, labels = _run_epoch(loader, epoch)
        order = _decode_order(loader, epoch)
        choice = _chosen(_chooser(path), 7, epoch, order)
        assert np.array_equal(labels, [reader.read(int(i), "label") for i in order])
        for k, (i, j) in enumerate(zip(order, choice)):
            assert np.array_equal(images[k], seen[i, j]), (i, j)
            rec = reader.read(int(i), "reinforce")[j]
            ref = np.zeros((1, C), np.float32)
            densify(rec["ids"][None].astype(np.int64), rec["probs"][None].astype(np.float32),
                    _MODE_IDS[mode], ref)
            assert np.allclose(targets[k], ref[0])


def test_teacher_targets_are_its_top_k(reinforced, plain):
    path, seen, _ = reinforced
    reader = fastdata.Reader(path)
    teacher = Teacher()
    x = (torch.from_numpy(seen[3]).permute(0, 3, 1, 2).float() / 255 - MEAN) / STD
    with torch.no_grad():
        p, i = torch.softmax(teacher(x), 1).topk(K, 1)
    recs = reader.read(3, "reinforce")
    assert np.array_equal(recs["ids"], i.numpy())
    assert np.allclose(recs["probs"], p.numpy(), atol=1e-3)
    # input fields copied byte for byte (images not re-encoded), side table kept
    src = fastdata.Reader(plain)
    for k in range(N):
        assert bytes(src.payload(k, "image")) == bytes(reader.payload(k, "image"))
        assert src.original_size(k, "image") == reader.original_size(k, "image")
        assert src.read(k, "label") == reader.read(k, "label")


def test_mixing_replay_matches_reference(reinforced):
    """Mixed records: the replayed image is mixup/cutmix of the two crops decoded alone."""
    path, _, kind = reinforced
    reader = fastdata.Reader(path)
    loader = _loader(path, epoch_seed=11)
    images, _, _ = _run_epoch(loader, 0)
    order = _decode_order(loader, 0)
    choice = _chosen(_chooser(path), 11, 0, order)
    # Each sample's and each partner's crop alone, through a loader over single-record files.
    solo = ReplayedCrop(OUT)
    solo.bind_image(reader, "image", 0)
    solo.setup_backend(1)
    state = solo.make_worker_state()
    mixed = 0
    for k, (i, j) in enumerate(zip(order, choice)):
        rec = reader.read(int(i), "reinforce")[j:j + 1].copy()
        if rec["partner"][0] < 0:
            continue
        mixed += 1
        crops = []
        for idx, box, flip in ((i, rec["box"][0], rec["flip"][0]),
                               (rec["partner"][0], rec["partner_box"][0], rec["partner_flip"][0])):
            single = np.zeros(1, rec.dtype)
            single["box"], single["flip"], single["partner"] = box, flip, -1
            single["mixup"] = single["cutmix"] = np.nan
            one = np.array([idx], np.int64)
            out = np.zeros((1, OUT, OUT, 3), np.uint8)
            solo.replay_range(solo.crops_for_records(one, single), one, 0, 1, out, state)
            crops.append(out[0].astype(np.float64))
        x, x2 = crops
        ref = x.copy()
        if not np.isnan(rec["mixup"][0]):
            lam = float(rec["mixup"][0])
            ref = np.floor(lam * x + (1 - lam) * x2 + 0.5)
        if not np.isnan(rec["cutmix"][0]):
            r1, c1, r2, c2 = rec["cutmix_box"][0]
            ref[r1:r2, c1:c2] = x2[r1:r2, c1:c2]
        assert np.array_equal(images[k], ref.astype(np.uint8)), (i, j)
    solo.release_worker_state(state)
    assert (mixed > 0) == (kind == "mixed")


# -- box mapping, against an independent reference ----------------------------------------------
def _stored_box(box, original_hw, stored_hw) -> tuple[int, int, int, int]:
    """(top, left, height, width) in stored pixels of ``box`` (same order) in original pixels.

    Written apart from fastdata's map_boxes, in exact integer arithmetic: an edge e on an axis of
    original length O and stored length S goes to round_half_up(e * S / O) = (2 e S + O) // (2 O);
    then the box is kept inside the image and at least one pixel long."""
    out = []
    for start, length, o, st in ((box[0], box[2], original_hw[0], stored_hw[0]),
                                 (box[1], box[3], original_hw[1], stored_hw[1])):
        a = (2 * start * st + o) // (2 * o)
        b = (2 * (start + length) * st + o) // (2 * o)
        a = min(max(a, 0), st - 1)
        b = min(max(b, a + 1), st)
        out.append((a, b - a))
    (top, height), (left, width) = out
    return top, left, height, width


def _box_mapping_to(rng, original_hw, stored_hw, target: int):
    """A random box in original pixels whose stored box (by _stored_box) is target x target."""
    box = []
    for axis in (0, 1):
        o, st = original_hw[axis], stored_hw[axis]
        guess = round(target * o / st)
        candidates = [(start, length) for start in range(o)
                      for length in range(guess - 3, guess + 4) if 0 < length <= o - start]
        rng.shuffle(candidates)
        for start, length in candidates:
            probe = (start, 0, length, 1) if axis == 0 else (0, start, 1, length)
            if _stored_box(probe, original_hw, stored_hw)[2 + axis] == target:
                box.append((start, length))
                break
        else:
            raise AssertionError(f"no box of {original_hw} maps to {target} stored pixels")
    (top, height), (left, width) = box
    return top, left, height, width


# (h, w) of noise images (a one-pixel shift changes every output pixel); MAX_RES shrinks most of
# them by factors that are not whole numbers; one is stored as it is.
BOX_SOURCES = [(210, 150), (150, 210), (97, 131), (64, 64), (301, 113), (120, 81)]
MAX_RES = 100


def _noise_file(path, rng):
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in BOX_SOURCES]
    DatasetWriter(path, {"image": RGBImageField("raw", max_resolution=MAX_RES),
                         "label": IntField()}, page_size=1 << 21, progress=False,
                  ).from_indexed_dataset([(im, i % C) for i, im in enumerate(images)])
    with fastdata.Reader(path) as reader:
        stored = [reader.read(i, "image").shape[:2] for i in range(len(images))]
    assert [s for s in stored if s != (64, 64)] and (64, 64) in stored
    return images, stored


def test_replay_crops_the_stored_box_an_independent_reference_gives(tmp_path):
    """Boxes stored in original pixels land on the stored (shrunk) image where plain integer
    arithmetic puts them: for boxes that map to exactly OUT x OUT stored pixels the replayed
    image is that block of the stored pixels, flipped as recorded; a whole-image CutMix paste
    shows the partner's block likewise; every reported box is the reference's."""
    rng = np.random.default_rng(21)
    images, stored = _noise_file(str(tmp_path / "sizes.beton"), rng)
    images, stored = images * 4, stored * 4     # each source with four boxes
    n = len(images)
    boxes = [_box_mapping_to(rng, im.shape[:2], st, OUT) for im, st in zip(images, stored)]
    flips = [i % 2 for i in range(n)]
    pasted = {1: 2, 4: 0, 9: 15, 20: 7}    # sample -> partner whose block covers the output
    records = []
    for i in range(n):
        rec = {"box": boxes[i], "flip": flips[i], "ids": np.arange(K), "probs": np.full(K, .3)}
        if i in pasted:
            p = pasted[i]
            rec.update(partner=p, partner_box=boxes[p], partner_flip=not flips[p], cutmix=0.0,
                       cutmix_box=(0, 0, OUT, OUT))
        records.append([rec])
    path = str(tmp_path / "boxes.beton")
    DatasetWriter(path, {"image": RGBImageField("raw", max_resolution=MAX_RES),
                         "reinforce": ReinforcementField(1, K, (OUT, OUT))}, page_size=1 << 21,
                  progress=False).from_indexed_dataset(list(zip(images, records)))
    reader = fastdata.Reader(path)
    loader = Loader(path, batch_size=n, order="sequential", return_params=True,
                    pipelines={"image": [ReplayedCrop(OUT), ToTensor()], "reinforce": None})
    out, params = next(iter(loader))
    out = out.numpy()

    def block(i, flip):
        t, l, h, w = _stored_box(boxes[i], images[i].shape[:2], stored[i])
        assert (h, w) == (OUT, OUT)
        pixels = reader.read(i, "image")[t:t + h, l:l + w]
        return pixels[:, ::-1] if flip else pixels

    for i in range(n):
        ref = _stored_box(boxes[i], images[i].shape[:2], stored[i])
        assert tuple(int(v) for v in params[i, :4]) == ref, i
        if i in pasted:
            p = pasted[i]
            assert np.array_equal(out[i], block(p, not flips[p])), i
        else:
            assert np.array_equal(out[i], block(i, flips[i])), i


def test_writer_shows_the_teacher_the_box_it_stores(tmp_path):
    """The reinforce writer's teacher saw, for each stored record, torchvision's resized_crop of
    the stored image over the box an independent reference maps the record's box to."""
    from torchvision.transforms.v2 import functional as tvf
    rng = np.random.default_rng(5)
    plain_path = str(tmp_path / "plain.beton")
    images, stored = _noise_file(plain_path, rng)
    teacher = Teacher()
    out = str(tmp_path / "reinforced.beton")
    reinforce(plain_path, teacher, out, num_augs=NS, top_k=K, batch_size=4, device="cpu", seed=9,
              output_size=OUT, num_workers=2, progress=False)
    seen = torch.cat(teacher.seen)
    seen = ((seen * STD + MEAN) * 255).round().clamp(0, 255).to(torch.uint8)
    seen = seen.reshape(len(images), NS, 3, OUT, OUT)
    reader = fastdata.Reader(out)
    shrunk = 0
    for i, image in enumerate(images):
        full = torch.from_numpy(reader.read(i, "image")).permute(2, 0, 1)
        for j, rec in enumerate(reader.read(i, "reinforce")):
            top, left, h, w = _stored_box(tuple(int(v) for v in rec["box"]), image.shape[:2],
                                          stored[i])
            want = tvf.resized_crop(full, top, left, h, w, [OUT, OUT], antialias=True)
            if rec["flip"]:
                want = want.flip(-1)
            diff = (seen[i, j].int() - want.int()).abs()
            assert diff.max() <= 2 and diff.float().mean() < 0.5, (i, j, diff.max())
            shrunk += stored[i] != image.shape[:2]
    assert shrunk > 0


# -- ImageNet+ import ----------------------------------------------------------------------------
def _ml_dr_files(folder, plain, mixing=False, ns=NS, k=K, extra=()):
    reader = fastdata.Reader(plain)
    rng = np.random.default_rng(4)
    expected = []
    for i in range(N):
        w, h = reader.original_size(i, "image")
        recs = []
        for j in range(ns):
            bh, bw = int(rng.integers(5, h + 1)), int(rng.integers(5, w + 1))
            box = (int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1)), bh, bw)
            flip = bool(rng.integers(2))
            ids = rng.choice(C, k, replace=False).tolist()
            probs = rng.dirichlet(np.ones(C))[:k].tolist()
            if mixing:
                if j == 0:
                    p = (i + 1) % N
                    pw, ph = reader.original_size(p, "image")
                    P = [p, [box, (0, 0, ph, pw)], [flip, True], 0.25, [0.6, 1, 2, 9, 10]]
                else:
                    P = [None, box, flip, None, None]
            else:
                P = [box, flip, *extra]
            recs.append({"params": P, "prob": (probs, ids)})
            expected.append((i, j, box, flip, ids, probs))
        torch.save((i, recs), str(folder / f"{i}.pth.tar"))
    return expected


def test_imagenet_plus_import(tmp_path, plain):
    folder = tmp_path / "rd"
    folder.mkdir()
    expected = _ml_dr_files(folder, plain)
    out = str(tmp_path / "plus.beton")
    import_imagenet_plus(plain, str(folder), out, num_workers=2, progress=False,
                         output_size=OUT)
    reader = fastdata.Reader(out)
    assert reader.fields["reinforce"].num_augs == NS and reader.fields["reinforce"].top_k == K
    for i, j, box, flip, ids, probs in expected:
        rec = reader.read(i, "reinforce")[j]
        assert tuple(rec["box"]) == box and bool(rec["flip"]) == flip
        assert rec["ids"].tolist() == ids and rec["partner"] == -1
        assert np.allclose(rec["probs"], np.float16(probs))
    images, targets, _ = _run_epoch(_loader(out), 0)
    assert images.shape == (N, OUT, OUT, 3) and np.allclose(targets.sum(1), 1, atol=1e-3)


def test_imagenet_plus_mixing_import(tmp_path, plain):
    folder = tmp_path / "rdm"
    folder.mkdir()
    _ml_dr_files(folder, plain, mixing=True)
    out = str(tmp_path / "plusm.beton")
    import_imagenet_plus(plain, str(folder), out, output_size=OUT, num_workers=2, progress=False,
                         transforms=["random_resized_crop", "random_horizontal_flip", "mixup",
                                     "cutmix"])
    rec = fastdata.Reader(out).read(5, "reinforce")
    assert rec["partner"].tolist() == [6, -1, -1, -1] and rec["partner_flip"][0] == 1
    assert rec["mixup"][0] == 0.25 and np.isclose(rec["cutmix"][0], 0.6)
    assert rec["cutmix_box"][0].tolist() == [1, 2, 9, 10]
    _run_epoch(_loader(out), 0)


@pytest.mark.parametrize("corrupt, message", [
    (lambda f: torch.save((4, []), f / "3.pth.tar"), r"3\.pth\.tar: holds index 4"),
    (lambda f: torch.save((3, [{"params": [(0, 0, 5, 5)], "prob": ([0.5] * K, [1, 2, 3])}] * NS),
                          f / "3.pth.tar"), r"3\.pth\.tar: record 0: params should be"),
    (lambda f: torch.save((3, [{"params": [(0, 0, 5000, 5), False],
                                "prob": ([0.5] * K, [1, 2, 3])}] * NS), f / "3.pth.tar"),
     r"3\.pth\.tar: record 0: crop .* outside"),
    (lambda f: torch.save((3, [{"params": [(0, 0, 5, 5), False],
                                "prob": ([0.5] * K, [1, 2, 3])}] * (NS - 1)), f / "3.pth.tar"),
     r"3\.pth\.tar: 3 records, expected 4"),
    (lambda f: (f / "3.pth.tar").write_bytes(b"not a pickle"), r"3\.pth\.tar: cannot load"),
    (lambda f: (f / "3.pth.tar").unlink(), r"3\.pth\.tar: missing"),
])
def test_imagenet_plus_rejects_malformed(tmp_path, plain, corrupt, message):
    folder = tmp_path / "bad"
    folder.mkdir()
    _ml_dr_files(folder, plain)
    corrupt(folder)
    with pytest.raises(Exception, match=message):
        import_imagenet_plus(plain, str(folder), str(tmp_path / "x.beton"), num_workers=2,
                             progress=False, output_size=OUT)
    assert not (tmp_path / "x.beton").exists()


def test_imagenet_plus_rejects_rand_augment(tmp_path, plain):
    folder = tmp_path / "ra"
    folder.mkdir()
    _ml_dr_files(folder, plain, extra=(None, None))
    torch.save((2, [{"params": [(0, 0, 5, 5), False, [(5, 9.0), (1, -3.0)], None],
                     "prob": ([0.5] * K, [1, 2, 3])}] * NS), folder / "2.pth.tar")
    with pytest.raises(Exception, match=r"2\.pth\.tar: record 0: has rand_augment parameters"):
        import_imagenet_plus(plain, str(folder), str(tmp_path / "x.beton"), num_workers=2,
                             progress=False, output_size=OUT,
                             transforms=["random_resized_crop", "random_horizontal_flip",
                                         "rand_augment", "random_erase"])


def test_command_line_writes_a_reinforced_file(tmp_path, plain, monkeypatch, capsys):
    from fastdata.cli import main
    (tmp_path / "tiny_teacher.py").write_text(
        "import torch\n"
        "torch.manual_seed(0)\n"
        "model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),\n"
        "                            torch.nn.Linear(3, 12))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "reinforced.beton"
    status = main(["write", "reinforce", "--data", plain, "--teacher", "tiny_teacher:model",
                   "--num-augs", "3", "--top-k", "4", "--out", str(out), "--device", "cpu",
                   "--quiet"])
    assert status == 0, capsys.readouterr()
    reader = fastdata.Reader(out)
    assert "reinforce" in reader.fields and len(reader) == len(fastdata.Reader(plain))
    field = reader.fields["reinforce"]
    assert (field.num_augs, field.top_k) == (3, 4)
    with pytest.raises(SystemExit) as usage:          # neither --teacher nor --imagenet-plus
        main(["write", "reinforce", "--data", plain, "--out", str(out)])
    assert usage.value.code == 2


# -- the writer's draws ---------------------------------------------------------------------------
def test_writer_draws_are_a_pure_function_of_seed_and_index():
    """Every draw on the counter-based RNG: an image's records do not depend on which images were
    drawn before it, nor on numpy's global state; the mixing statistics are the asked ones."""
    from fastdata.writers.reinforce.sampling import Augmenter
    n, ns = 50, 40
    original = np.stack([np.arange(n) % 30 + 40, np.arange(n) % 17 + 50], 1).astype(np.int64)
    make = lambda seed: Augmenter(original, ns, K, (OUT, OUT), seed, mixup_p=0.5,  # noqa: E731
                                  cutmix_p=0.3, mixup_alpha=1.0, cutmix_alpha=1.0)
    aug = make(3)
    forward = [aug.records(i) for i in range(n)]
    np.random.seed(123)
    backward = [make(3).records(i) for i in reversed(range(n))][::-1]
    for a, b in zip(forward, backward):
        assert a.tobytes() == b.tobytes()
    assert forward[7].tobytes() != make(4).records(7).tobytes()
    recs = np.concatenate(forward)
    index = np.repeat(np.arange(n), ns)
    mixed = recs["partner"] >= 0
    do_mix, do_cut = ~np.isnan(recs["mixup"]), ~np.isnan(recs["cutmix"])
    assert np.array_equal(mixed, do_mix | do_cut)
    assert abs(do_mix.mean() - 0.5) < 0.05 and abs(do_cut.mean() - 0.3) < 0.05
    assert np.all(recs["partner"][mixed] != index[mixed]) and recs["partner"].max() < n
    assert np.bincount(recs["partner"][mixed], minlength=n).min() > 0
    lam = recs["mixup"][do_mix]                    # Beta(1, 1) / 2: uniform on [0, 0.5]
    assert lam.min() >= 0 and lam.max() <= 0.5 and abs(lam.mean() - 0.25) < 0.02
    box = recs["cutmix_box"][do_cut].astype(np.int64)
    area = (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])
    assert np.allclose(recs["cutmix"][do_cut], 1 - area / OUT ** 2, atol=1e-6)
    assert recs["cutmix"][do_cut].min() >= 0 and recs["cutmix"][do_cut].max() <= 1
    with pytest.raises(ValueError, match="mixup_alpha must be positive"):
        Augmenter(original, ns, K, (OUT, OUT), mixup_p=0.5, mixup_alpha=0.0)


def test_reinforce_with_no_workers_writes_the_same_file(plain, tmp_path):
    """num_workers=0: rendering and writing in the calling thread, the same records."""
    out = {}
    for workers in (0, 2):
        out[workers] = str(tmp_path / f"w{workers}.beton")
        reinforce(plain, Teacher(), out[workers], num_augs=NS, top_k=K, batch_size=10,
                  device="cpu", seed=3, output_size=OUT, num_workers=workers, progress=False,
                  mixup_p=0.5, cutmix_p=0.5)
    a, b = fastdata.Reader(out[0]), fastdata.Reader(out[2])
    for i in range(N):
        assert a.read(i, "reinforce").tobytes() == b.read(i, "reinforce").tobytes()
