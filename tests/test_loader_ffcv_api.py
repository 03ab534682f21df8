"""The Loader's FFCV interface: FFCV's positional parameters, seed=None, numpy outputs without
ToTensor, filter(), next_epoch, recompile, and torch's DistributedSampler sharding."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fastdata import BytesField, DatasetWriter, FloatField, IntField, Loader  # noqa: E402
from fastdata.ops import (BatchOp, FloatDecoder, IntDecoder, Mixup, Squeeze,  # noqa: E402
                          ToTensor)
from fastdata.order import OrderOption, shard, shard_size  # noqa: E402

N = 120


@pytest.fixture(scope="module")
def beton(tmp_path_factory):
    """Fields (index, value, blob): index = i, value = i / N."""
    path = str(tmp_path_factory.mktemp("ffcv_api") / "values.beton")
    rows = [(i, i / N, np.full(3, i % 251, np.uint8)) for i in range(N)]
    DatasetWriter(path, {"index": IntField(), "value": FloatField(), "blob": BytesField()},
                  page_size=1 << 21, progress=False).from_indexed_dataset(rows)
    return path


def indices_of(loader):
    # copy each batch: its arrays share a ring slot that later batches reuse
    return np.concatenate([np.array(b[0].numpy() if isinstance(b[0], torch.Tensor) else b[0])
                           .reshape(-1) for b in loader]).tolist()


def test_positional_parameters_are_ffcvs(beton):
    # FFCV: (fname, batch_size, num_workers, os_cache, order, distributed, seed, indices,
    #        pipelines, custom_fields, drop_last, batches_ahead, recompile)
    positional = Loader(beton, 8, 1, False, OrderOption.RANDOM, False, 3, range(50),
                        {"blob": None}, None, False, 2, False)
    keywords = Loader(fname=beton, batch_size=8, num_workers=1, os_cache=False, order="random",
                      seed=3, indices=range(50), pipelines={"blob": None}, drop_last=False,
                      batches_ahead=2)
    assert positional.reader._mmap is None                 # os_cache=False took effect
    assert positional.batches_ahead == 2 and not positional.drop_last
    assert indices_of(positional) == indices_of(keywords)
    assert sorted(indices_of(positional)) == list(range(50))


def test_pipelines_without_to_tensor_yield_numpy_arrays(beton):
    loader = Loader(beton, 8, pipelines={"index": [IntDecoder()], "value": [FloatDecoder()],
                                         "blob": None})
    index, value = next(iter(loader))
    assert isinstance(index, np.ndarray) and index.dtype == np.int64 and index.shape == (8, 1)
    assert isinstance(value, np.ndarray) and value[:, 0].tolist() == [i / N for i in range(8)]
    # The default pipeline (decoder + ToTensor) and an op that needs torch give tensors.
    index, value, blob = next(iter(Loader(beton, 8, pipelines={
        "value": [FloatDecoder(), Squeeze()]})))
    assert isinstance(index, torch.Tensor) and isinstance(blob, torch.Tensor)
    assert isinstance(value, torch.Tensor) and value.shape == (8,)
    with pytest.raises(ValueError, match=r"\['index'\] yield numpy arrays"):
        Loader(beton, 8, pipelines={"index": [IntDecoder()]},
               batch_ops=[Mixup(mixup_alpha=1.0, num_classes=4, label="index")])


def test_seed_none_draws_a_seed_from_numpys_global_rng(beton):
    np.random.seed(1)
    a = Loader(beton, 8, order="random", seed=None, pipelines={"blob": None})
    np.random.seed(1)
    b = Loader(beton, 8, order="random", seed=None, pipelines={"blob": None})
    c = Loader(beton, 8, order="random", seed=None, pipelines={"blob": None})
    assert a.seed == b.seed != c.seed
    assert indices_of(a) == indices_of(b) != indices_of(c)


def test_resume_with_a_drawn_seed_replays_the_saved_run(beton):
    first = Loader(beton, 8, order="random", seed=None, pipelines={"blob": None})
    epoch = iter(first)
    next(epoch)
    state = first.state_dict()
    rest = [b[0].clone() for b in epoch]
    resumed = Loader(beton, 8, order="random", seed=None, pipelines={"blob": None})
    resumed.load_state_dict(state)
    assert resumed.seed == first.seed
    assert all(torch.equal(x, y[0]) for x, y in zip(rest, resumed))
    fixed = Loader(beton, 8, order="random", seed=first.seed + 1, pipelines={"blob": None})
    with pytest.raises(ValueError, match="seed"):
        fixed.load_state_dict(state)                    # a given seed must match


def test_filter_keeps_the_samples_whose_field_passes(beton):
    loader = Loader(beton, 8, order="random", seed=5, indices=range(10, 110),
                    pipelines={"blob": None})
    filtered = loader.filter("value", lambda v: 0.5 <= v[0] < 0.75)
    expected = [i for i in range(10, 110) if 0.5 <= i / N < 0.75]
    assert sorted(filtered.indices.tolist()) == expected
    assert filtered.order is OrderOption.RANDOM and filtered.seed == 5
    seen = indices_of(filtered)          # one epoch: drop_last leaves a random few out
    assert len(seen) == len(filtered) * 8 == len(expected) // 8 * 8
    assert len(set(seen)) == len(seen) and set(seen) <= set(expected)
    with pytest.raises(ValueError, match="no field 'nope'"):
        loader.filter("nope", bool)


def test_filter_works_on_a_shard_set(beton, tmp_path):
    import shutil
    second = str(tmp_path / "second.beton")
    shutil.copy(beton, second)
    loader = Loader([beton, second], 8, pipelines={"blob": None})
    filtered = loader.filter("index", lambda i: i[0] % 10 == 0)
    assert filtered.indices.tolist() == [i for i in range(2 * N) if (i % N) % 10 == 0]


def test_next_epoch_is_readable_and_settable(beton):
    loader = Loader(beton, 8, order="random", seed=2, pipelines={"blob": None})
    assert loader.next_epoch == 0
    list(loader)
    assert loader.next_epoch == 1
    loader.next_epoch = 5
    assert indices_of(loader) == loader.epoch_indices(5)[:len(loader) * 8].tolist()
    assert loader.next_epoch == 6


def test_recompile_calls_the_ops_recompile_hook_each_epoch(beton):
    class Counting(BatchOp):
        ffcv_jit_mode = None          # takes numpy or torch batches

        def __init__(self):
            self.recompiled = 0

        def recompile(self):
            self.recompiled += 1

        def __call__(self, batch, ctx):
            return batch
    for recompile, expected in ((False, 0), (True, 3)):
        op = Counting()
        loader = Loader(beton, 8, pipelines={"index": [IntDecoder(), op]}, recompile=recompile)
        for _ in range(3):
            list(loader)
        assert op.recompiled == expected


@pytest.mark.parametrize("n,world", [(10, 3), (12, 4), (7, 2), (2, 5)])
def test_interleaved_shards_are_torchs_distributed_sampler(n, world):
    from torch.utils.data import DistributedSampler
    order = np.random.default_rng(n).permutation(100)[:n]
    for rank in range(world):
        sampler = DistributedSampler(order, num_replicas=world, rank=rank, shuffle=False,
                                     drop_last=False)
        want = order[list(sampler)].tolist()
        for drop_last in (False, True):        # FFCV's sampler always pads
            assert shard(order, rank, world, drop_last, "interleaved").tolist() == want
            assert shard_size(n, world, drop_last, "interleaved") == len(want)


def test_unknown_rank_split_is_refused(beton):
    with pytest.raises(ValueError, match="rank_split must be one of"):
        Loader(beton, 8, rank_split="striped")
