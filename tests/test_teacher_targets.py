"""Precomputed teacher top-k targets: the field round-trips, and densifies as ml-dr does."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastdata  # noqa: E402
from fastdata import DatasetWriter, FormatError, IntField, Loader  # noqa: E402
from fastdata.fields.topk import TopKField  # noqa: E402
from fastdata.ops.targets import TeacherTargets  # noqa: E402
from fastdata.ops.tensor import ToTensor  # noqa: E402

C, K = 20, 4


def _reference(ids, probs, mode):
    out = np.zeros(C)
    if mode == "smooth" and probs.sum() <= 1:
        out[:] = (1 - probs.sum()) / (C - K)
        out[ids] = probs
    elif mode in ("smooth", "zeros"):
        e = np.exp(probs - probs.max())
        out[ids] = e / e.sum()
    else:
        out[ids] = probs / probs.sum()
    return out


@pytest.fixture(scope="module")
def beton(tmp_path_factory):
    rng = np.random.default_rng(0)
    samples = []
    for i in range(30):
        ids = rng.choice(C, K, replace=False)
        probs = rng.dirichlet(np.ones(C))[:K] * (1.6 if i % 7 == 0 else 1.0)  # some sum > 1
        samples.append(((ids, probs), i))
    samples[5] = (rng.dirichlet(np.ones(C)), 5)                    # a dense vector
    path = str(tmp_path_factory.mktemp("teacher") / "t.beton")
    DatasetWriter(path, {"teacher": TopKField(K), "label": IntField()}, page_size=1 << 21,
                  progress=False).from_indexed_dataset(samples)
    return path, samples


def test_field_round_trip(beton):
    path, samples = beton
    reader = fastdata.Reader(path)
    assert reader.fields["teacher"].k == K
    ids, probs = reader.read(5, "teacher")
    dense = samples[5][0]
    assert ids.tolist() == np.argsort(-dense, kind="stable")[:K].tolist()
    assert np.allclose(probs, dense[ids], atol=1e-3)
    ids, probs = reader.read(1, "teacher")
    assert ids.tolist() == samples[1][0][0].tolist()
    assert np.allclose(probs, samples[1][0][1].astype(np.float16))


@pytest.mark.parametrize("mode", ["smooth", "zeros", "renorm"])
def test_densify_matches_ml_dr(beton, mode):
    path, _ = beton
    reader = fastdata.Reader(path)
    loader = Loader(path, batch_size=30, pipelines={
        "teacher": [TeacherTargets(C, densify=mode), ToTensor()], "label": None})
    (targets,) = next(iter(loader))
    assert targets.shape == (30, C) and targets.dtype == torch.float32
    for i in range(30):
        ids, probs = reader.read(i, "teacher")
        assert np.allclose(targets[i].numpy(), _reference(ids, probs, mode), atol=1e-6)
    assert torch.allclose(targets.sum(1), torch.ones(30), atol=1e-5)
    assert (targets >= 0).all()


def test_bad_values_and_ids():
    field = TopKField(K)
    for bad in [([0, 1, 2], [0.1, 0.1, 0.1]), ([0, 0, 1, 2], [0.1] * 4),
                ([0, 1, 2, 3], [0.1, np.nan, 0, 0]), ([0, 1, 2, 40000], [0.1] * 4),
                ([0, 1, 2, 3], [-0.1, 0, 0, 0])]:
        with pytest.raises(ValueError):
            field.encode(bad, 0)
    with pytest.raises(FormatError):
        TopKField.from_arguments(np.zeros(1024, np.uint8))


def test_class_ids_beyond_num_classes_are_refused(beton):
    path, _ = beton
    with pytest.raises(ValueError, match="num_classes"):
        Loader(path, batch_size=4, pipelines={"teacher": [TeacherTargets(3)], "label": None})
