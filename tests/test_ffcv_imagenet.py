"""ffcv-imagenet's training script (libffcv/ffcv-imagenet, train_imagenet.py, vendored in
tests/ffcv_upstream/imagenet/) with only its imports changed: its create_train_loader,
create_val_loader and train()'s resolution schedule (decoder.output_size set between epochs)
give FFCV's batch shapes every epoch of the 16-epoch ResNet-50 config."""
import importlib.util
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("fastargs")
pytest.importorskip("torchmetrics")

from fastdata import DatasetWriter, IntField, RGBImageField  # noqa: E402
from fastdata.demo import synthetic_photo  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
UPSTREAM = os.path.join(HERE, "ffcv_upstream")
sys.path.insert(0, UPSTREAM)
from run import rewrite  # noqa: E402


def _write(path, n, seed):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        h, w = int(rng.integers(120, 300)), int(rng.integers(120, 300))
        rows.append((synthetic_photo(np.random.default_rng((seed, i)), h, w), i % 10))
    DatasetWriter(str(path), {"image": RGBImageField(write_mode="proportion", max_resolution=256,
                                                     compress_probability=0.5),
                              "label": IntField()}, page_size=1 << 21,
                  progress=False).from_indexed_dataset(rows)


@pytest.fixture(scope="module")
def train_imagenet(tmp_path_factory):
    """The script, imports rewritten by tests/ffcv_upstream/run.py, imported as a module."""
    folder = tmp_path_factory.mktemp("ffcv_imagenet")
    with open(os.path.join(UPSTREAM, "imagenet", "train_imagenet.py"), encoding="utf-8") as f:
        text, changes = rewrite(f.read())
    assert changes and all("import" in why or "modules" in why for why in changes)
    script = folder / "train_imagenet.py"
    script.write_text(text)
    spec = importlib.util.spec_from_file_location("train_imagenet_rewritten", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_loaders_and_resolution_schedule_give_ffcvs_shapes(train_imagenet, tmp_path,
                                                           monkeypatch):
    from fastargs import get_current_config
    _write(tmp_path / "train.beton", 64, 0)
    _write(tmp_path / "val.beton", 20, 1)
    config = get_current_config()
    config.collect_yaml(os.path.join(UPSTREAM, "imagenet", "rn50_16_epochs.yaml"))
    # This machine's paths and sizes; one process (the config's distributed=1 needs 8 GPUs).
    config.collect({"data.train_dataset": str(tmp_path / "train.beton"),
                    "data.val_dataset": str(tmp_path / "val.beton"), "data.num_workers": 2,
                    "training.batch_size": 16, "validation.batch_size": 8,
                    "training.distributed": 0, "logging.folder": str(tmp_path)})
    if not torch.cuda.is_available():
        # The script copies to f'cuda:{gpu}'; without a GPU the batches stay on the CPU.
        to_device = train_imagenet.ToDevice
        monkeypatch.setattr(train_imagenet, "ToDevice",
                            lambda device, non_blocking=True: to_device("cpu", non_blocking))

    trainer = object.__new__(train_imagenet.ImageNetTrainer)
    trainer.gpu = 0
    trainer.all_params = config
    trainer.train_loader = trainer.create_train_loader()
    trainer.val_loader = trainer.create_val_loader()
    trainer.model = torch.nn.Linear(1, 1)          # train() saves its weights at the end
    trainer.log_folder = tmp_path
    seen = {"train": [], "val": []}

    def train_loop(epoch):          # stands in for the model step; reads every batch
        for images, labels in trainer.train_loader:
            seen["train"].append((epoch, tuple(images.shape), images.dtype,
                                  images.is_contiguous(memory_format=torch.channels_last),
                                  tuple(labels.shape), labels.dtype))
        return 0.0

    def eval_and_log(extra):
        for images, labels in trainer.val_loader:
            seen["val"].append((tuple(images.shape), images.dtype, tuple(labels.shape)))

    trainer.train_loop, trainer.eval_and_log = train_loop, eval_and_log
    trainer.train()                       # verbatim: sets decoder.output_size each epoch

    # FFCV's schedule for this config (start_ramp 11, end_ramp 13, 160 -> 192, multiples of 32)
    def resolution(epoch):
        if epoch <= 11:
            return 160
        if epoch >= 13:
            return 192
        return int(np.round(np.interp([epoch], [11, 13], [160, 192])[0] / 32)) * 32
    assert len(seen["train"]) == 16 * (64 // 16)
    for epoch, shape, dtype, channels_last, label_shape, label_dtype in seen["train"]:
        res = resolution(epoch)
        assert shape == (16, 3, res, res) and dtype == torch.float16 and channels_last
        assert label_shape == (16,) and label_dtype == torch.int64
    assert {s[1][2] for s in seen["train"]} == {160, 192}
    # validation at 256 (the config's resolution), sequential, last partial batch kept
    assert len(seen["val"]) == 17 * 3
    for k, (shape, dtype, label_shape) in enumerate(seen["val"]):
        b = 4 if k % 3 == 2 else 8
        assert shape == (b, 3, 256, 256) and dtype == torch.float16 and label_shape == (b,)
    assert (tmp_path / "final_weights.pt").exists()
