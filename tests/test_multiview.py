"""Several augmented views of one decoded image, each with its own parameters."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastdata  # noqa: E402
from fastdata import DatasetWriter, IntField, Loader, RGBImageField  # noqa: E402
from fastdata.demo import synthetic_photo  # noqa: E402
from fastdata.ops import (IntDecoder, RandomHorizontalFlip, RandomResizedCrop,  # noqa: E402
                          Squeeze, ToTensor)
from fastdata.ops.image_decoders import MultiView  # noqa: E402
from oracles import resize_crop_reference  # noqa: E402

N = 40


@pytest.fixture(scope="module")
def beton(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("views") / "views.beton")
    rng = np.random.default_rng(0)
    samples = [(synthetic_photo(np.random.default_rng(i), int(rng.integers(60, 200)),
                                int(rng.integers(60, 200))), i) for i in range(N)]
    DatasetWriter(path, {"image": RGBImageField(write_mode="proportion"), "label": IntField()},
                  page_size=1 << 21, progress=False).from_indexed_dataset(samples)
    return path


def test_views_have_their_own_boxes_and_match_the_reference(beton):
    local = RandomResizedCrop(24, scale=(0.05, 0.4))
    loader = Loader(beton, batch_size=N, order="random", seed=3, return_params=True, pipelines={
        "image": [MultiView(RandomResizedCrop(48), local, local), RandomHorizontalFlip(),
                  ToTensor()],
        "label": [IntDecoder(), ToTensor(), Squeeze()]})
    assert loader.pipeline_names == ("image", "image_1", "image_2", "label")
    global_view, local_a, local_b, labels, p0, p1, p2 = next(iter(loader))
    assert global_view.shape == (N, 48, 48, 3) and local_a.shape == local_b.shape == (N, 24, 24, 3)
    # Independent parameters: the two local views (same decoder object) differ.
    assert not torch.equal(p1[:, :4], p2[:, :4]) and not torch.equal(p1[:, 8], p2[:, 8])
    reader = fastdata.Reader(beton)
    for view, params in ((global_view, p0), (local_a, p1), (local_b, p2)):
        size = view.shape[1]
        for k in range(N):
            stored = reader.read(int(labels[k]), "image")
            top, left, h, w = params[k, :4].tolist()
            ref = resize_crop_reference(stored, top, left, h, w, size, size, bool(params[k, 8]))
            assert np.abs(ref.astype(int) - view[k].numpy().astype(int)).mean() <= 2.0


def test_first_view_draws_what_the_single_view_pipeline_draws(beton):
    def first(decoder):
        loader = Loader(beton, batch_size=N, order="random", seed=9, return_params=True,
                        pipelines={"image": [decoder, RandomHorizontalFlip(), ToTensor()],
                                   "label": None})
        batch = next(iter(loader))
        return batch[0], batch[-2 if isinstance(decoder, MultiView) else -1]
    single, single_params = first(RandomResizedCrop(32))
    multi, multi_params = first(MultiView(RandomResizedCrop(32), RandomResizedCrop(16)))
    assert torch.equal(single_params, multi_params)
    # Same boxes; pixels differ at most by the region decoder's edge rounding (the multi-view
    # decode covers the union of the boxes).
    assert (single.int() - multi.int()).abs().float().mean() < 0.1


def test_bad_views_are_rejected():
    with pytest.raises(ValueError):
        MultiView()
    with pytest.raises(TypeError):
        MultiView(RandomResizedCrop(32), "not a decoder")


class CropSpy:
    """A batch op that keeps each batch's crop record of the image field."""

    def __call__(self, batch, ctx):
        self.crop = ctx.crops["image"]
        return batch


def test_a_later_flip_flips_each_view_on_its_own_and_the_record_says_so(beton):
    """A RandomHorizontalFlip that does not directly follow the decoder (so it flips the tensors)
    flips each view with its own bit, the bits a flip folded into the decoder draws, and the
    crop record's per-view flips are those bits."""
    def run(image_ops, *batch_ops):
        loader = Loader(beton, batch_size=N, order="random", seed=5, return_params=True,
                        pipelines={"image": [MultiView(RandomResizedCrop(32),
                                                       RandomResizedCrop(24)), *image_ops],
                                   "label": None}, batch_ops=list(batch_ops))
        return next(iter(loader))
    spy = CropSpy()
    later = run([ToTensor(), RandomHorizontalFlip()], spy)
    folded = run([RandomHorizontalFlip(), ToTensor()])
    plain = run([ToTensor()])
    bits = [later[2][:, 8].bool(), later[3][:, 8].bool()]
    assert not torch.equal(bits[0], bits[1])               # each view has its own bit
    assert torch.equal(later[2], folded[2]) and torch.equal(later[3], folded[3])
    for v in range(2):
        np.testing.assert_array_equal(spy.crop.flips[v], bits[v].numpy())
        expected = torch.where(bits[v].view(-1, 1, 1, 1), plain[v].flip(2), plain[v])
        assert torch.equal(later[v], expected)
        assert torch.equal(later[2 + v][:, :8], plain[2 + v][:, :8])   # same boxes
