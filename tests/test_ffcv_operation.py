"""FFCV's extension point: custom ops written for FFCV 1.0.2 (``Operation`` with
``generate_code`` and ``declare_state_and_memory``) run in fastdata's pipelines with only their
imports changed.  The live test runs the same op source under FFCV's Loader and fastdata's and
compares the batches."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fastdata import DatasetWriter, FloatField, IntField, Loader, RGBImageField  # noqa: E402
from fastdata.ops import (CenterCrop, Cutout, IntDecoder, FloatDecoder, SimpleRGBImageDecoder,  # noqa: E402
                          ToTensor, ToTorchImage)
from test_ffcv_compat import ffcv_python, run_ffcv  # noqa: E402,F401

N, H, W = 24, 6, 10

# Written as for FFCV: only this header differs between the two runs.
FASTDATA_HEADER = """
from fastdata.ops.ffcv_operation import AllocationQuery, Compiler, Operation, State
"""
FFCV_HEADER = """
from ffcv.pipeline.allocation_query import AllocationQuery
from ffcv.pipeline.compiler import Compiler
from ffcv.pipeline.operation import Operation
from ffcv.pipeline.state import State
"""
OPS_SOURCE = """
from dataclasses import replace
import numpy as np


class Doubler(Operation):
    '''FFCV's tests/test_partial_pipeline.py op.'''

    def generate_code(self):
        def code(x, dst):
            dst[:] = x * 2
            return dst
        return code

    def declare_state_and_memory(self, previous_state):
        return (previous_state, AllocationQuery(previous_state.shape, previous_state.dtype,
                                                previous_state.device))


class HalveAndMark(Operation):
    '''A per-sample op on raw images: a parallel loop from Compiler.get_iterator, the sample
    indices, an output buffer of its own.'''

    def generate_code(self):
        my_range = Compiler.get_iterator()

        def halve(images, dst, indices):
            for i in my_range(images.shape[0]):
                dst[i] = images[i] // 2
                dst[i, 0, 0, 0] = indices[i] % 251
            return dst

        halve.is_parallel = True
        halve.with_indices = True
        return halve

    def declare_state_and_memory(self, previous_state):
        return (replace(previous_state, jit_mode=True),
                AllocationQuery(previous_state.shape, previous_state.dtype))
"""


def load_ops(header: str) -> dict:
    namespace: dict = {}
    exec(header + OPS_SOURCE, namespace)
    return namespace


OPS = load_ops(FASTDATA_HEADER)
Doubler, HalveAndMark = OPS["Doubler"], OPS["HalveAndMark"]


def pictures() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (N, H, W, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def beton(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("ffcv_operation") / "ops.beton")
    DatasetWriter(path, {"image": RGBImageField(write_mode="raw"), "label": IntField(),
                         "value": FloatField()}, progress=False).from_indexed_dataset(
        [(img, i, float(np.sin(i))) for i, img in enumerate(pictures())])
    return path


def test_ffcvs_partial_pipeline_op_runs(beton):
    """FFCV's test_basic_simple: [FloatDecoder(), Doubler(), ToTensor()]."""
    doubler = Doubler()
    loader = Loader(beton, batch_size=8, num_workers=2, pipelines={
        "value": [FloatDecoder(), doubler, ToTensor()], "image": None, "label": None})
    values = torch.cat([batch[0].clone() for batch in loader])
    assert np.allclose(values.squeeze().numpy(), 2 * np.sin(np.arange(N)))
    assert hasattr(doubler._code, "py_func")       # JIT mode: Numba-compiled


def test_per_sample_op_with_iterator_and_indices(beton):
    op = HalveAndMark()
    loader = Loader(beton, batch_size=8, num_workers=1, order="random", seed=3, pipelines={
        "image": [SimpleRGBImageDecoder(), op, ToTensor()], "label": [IntDecoder(), ToTensor()],
        "value": None})
    stored = pictures()
    pointers = set()
    for _ in range(3):
        for images, labels in loader:
            idx = labels.numpy().reshape(-1)
            expected = stored[idx] // 2
            expected[:, 0, 0, 0] = idx % 251
            np.testing.assert_array_equal(images.numpy(), expected)
            pointers.add(images.data_ptr())
    # dst comes from the op's per-slot buffers, made once: never more than the ring's slots.
    assert 1 < len(pointers) <= loader.ring_size


class Spy(OPS["Operation"]):
    """Records the state it is handed; passes the batch on."""

    def __init__(self, jit=None):
        super().__init__()
        self.jit, self.states, self.inputs = jit, [], []

    def generate_code(self):
        inputs = self.inputs

        def spy(batch, dst):
            inputs.append(type(batch))
            return batch
        return spy

    def declare_state_and_memory(self, previous_state):
        self.states.append(previous_state)
        state = previous_state if self.jit is None else \
            OPS["replace"](previous_state, jit_mode=self.jit)
        return state, None


def test_state_follows_ffcvs_pipeline_model(beton):
    from fastdata.ops.ffcv_operation import Compiler
    spies = [Spy() for _ in range(4)]
    Compiler.set_enabled(False)      # the spy appends to a Python list
    try:
        loader = Loader(beton, batch_size=8, num_workers=1, pipelines={
            "image": [SimpleRGBImageDecoder(), spies[0], Cutout(2), ToTensor(), spies[1],
                      ToTorchImage(), spies[2]],
            "label": [IntDecoder(), ToTensor(), spies[3]], "value": None})
        next(iter(loader))
    finally:
        Compiler.set_enabled(True)
    first, tensor, image, label = (s.states[0] for s in spies)
    assert (first.jit_mode, first.shape, first.dtype) == (True, (H, W, 3), np.dtype("uint8"))
    assert (tensor.jit_mode, tensor.shape, tensor.dtype) == (False, (H, W, 3), torch.uint8)
    assert (image.jit_mode, image.shape) == (False, (3, H, W))
    assert (label.jit_mode, label.shape, label.dtype) == (False, (1,), torch.int64)
    assert spies[0].inputs[0] is np.ndarray and spies[1].inputs[0] is torch.Tensor
    assert not hasattr(spies[0]._code, "py_func")      # compiling disabled: the function itself


def test_op_is_declared_again_when_the_image_size_changes(beton):
    """Progressive resizing: a new output size between epochs gives the op a new state and new
    buffers."""
    decoder = CenterCrop(4)
    op = HalveAndMark()
    loader = Loader(beton, batch_size=8, num_workers=1, pipelines={
        "image": [decoder, op, ToTensor()], "label": None, "value": None})
    first = next(iter(loader))[0].clone()
    assert first.shape == (8, 4, 4, 3) and op._state[0].shape == (4, 4, 3)
    decoder.output_size = 6
    second = next(iter(loader))[0].clone()
    assert second.shape == (8, 6, 6, 3) and op._state[0].shape == (6, 6, 3)
    assert op._memory[0].shape == (8, 6, 6, 3)
    assert np.array_equal(second[:, 0, 0, 0].numpy(), np.arange(8) % 251)


def test_failures_point_to_batch_op(beton):
    class Broken(OPS["Operation"]):
        def generate_code(self):
            def broken(batch, dst):
                raise RuntimeError("boom")
            return broken

        def declare_state_and_memory(self, previous_state):
            return OPS["replace"](previous_state, jit_mode=False), None

    class BadDeclaration(Broken):
        def declare_state_and_memory(self, previous_state):
            return previous_state

    for op, message in ((Broken(), "boom.*BatchOp"), (BadDeclaration(), "must return")):
        loader = Loader(beton, batch_size=8, num_workers=0, pipelines={
            "label": [IntDecoder(), ToTensor(), op], "image": None, "value": None})
        with pytest.raises(ValueError, match=message):
            next(iter(loader))


FFCV_RUN = r'''
import sys
import numpy as np
from ffcv.loader import Loader, OrderOption
from ffcv.fields.basics import IntDecoder, FloatDecoder
from ffcv.fields.rgb_image import SimpleRGBImageDecoder
from ffcv.transforms import ToTensor

loader = Loader(sys.argv[1], batch_size=8, num_workers=2, order=OrderOption.SEQUENTIAL,
                pipelines={'image': [SimpleRGBImageDecoder(), HalveAndMark(), ToTensor()],
                           'label': [IntDecoder(), ToTensor()],
                           'value': [FloatDecoder(), Doubler(), ToTensor()]})
out = {}
for b, (images, labels, values) in enumerate(loader):
    out['images_%d' % b] = images.numpy().copy()
    out['labels_%d' % b] = labels.numpy().copy()
    out['values_%d' % b] = values.numpy().copy()
np.savez(sys.argv[2], **out)
'''


def test_custom_ops_give_ffcvs_batches(ffcv_python, beton, tmp_path):
    run_ffcv(ffcv_python, FFCV_HEADER + OPS_SOURCE + FFCV_RUN, beton, tmp_path / "ffcv.npz",
             cwd=tmp_path)
    theirs = dict(np.load(tmp_path / "ffcv.npz"))
    loader = Loader(beton, batch_size=8, num_workers=2, order="sequential", pipelines={
        "image": [SimpleRGBImageDecoder(), HalveAndMark(), ToTensor()],
        "label": [IntDecoder(), ToTensor()],
        "value": [FloatDecoder(), Doubler(), ToTensor()]})
    batches = [[t.clone() for t in batch] for batch in loader]
    assert len(theirs) == 3 * len(batches) == 9
    for b, (images, labels, values) in enumerate(batches):
        for name, ours in (("images", images), ("labels", labels), ("values", values)):
            assert np.array_equal(theirs[f"{name}_{b}"], ours.numpy()), (name, b)
            assert theirs[f"{name}_{b}"].dtype == ours.numpy().dtype
