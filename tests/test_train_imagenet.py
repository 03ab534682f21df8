"""bench/train_imagenet.py and friends: FFCV's ImageNet recipe trained with fastdata, on CPU.

Tiny images (40-56 px), a one-block-per-stage torchvision ResNet (``resnet_tiny``), a few
hundred images of 10 learnable classes (bench/synthetic_classes.py).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
yaml = pytest.importorskip("yaml")

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
sys.path.insert(0, BENCH)

import imagenet_loaders as data  # noqa: E402
import imagenet_recipe as recipe  # noqa: E402
import loader_bound  # noqa: E402
import synthetic_classes  # noqa: E402
import train_imagenet  # noqa: E402

LOG_FIELDS = ("epoch", "resolution", "lr", "train_loss", "top_1", "top_5", "images_per_s",
              "epoch_seconds", "data_wait_fraction")
CLASSES = 10


def tiny_config(path, epochs, lr=0.05, min_res=32, max_res=32, start_ramp=0, end_ramp=0):
    path.write_text(yaml.safe_dump({
        "lr": {"lr": lr, "lr_peak_epoch": 1},
        "model": {"arch": "resnet_tiny"},
        "resolution": {"min_res": min_res, "max_res": max_res, "start_ramp": start_ramp,
                       "end_ramp": end_ramp},
        "training": {"batch_size": 32, "epochs": epochs, "label_smoothing": 0.1,
                     "weight_decay": 5e-5, "use_blurpool": 1},
        "validation": {"resolution": 36, "batch_size": 50, "lr_tta": 1},
        "data": {"num_workers": 2}}))
    return str(path)


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_imagenet")
    train = synthetic_classes.write_classes(str(root / "train.beton"), 320, CLASSES, seed=0)
    val = synthetic_classes.write_classes(str(root / "val.beton"), 100, CLASSES, seed=1)
    return train, val


def read_log(stdout):
    return [json.loads(line) for line in stdout.splitlines()
            if line.startswith("{") and '"epoch"' in line and '"start"' not in line]


def run_main(argv, capsys):
    rc = train_imagenet.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


# -- training runs -------------------------------------------------------------------------------

def test_single_process_learns_and_logs_every_field(sets, tmp_path, capsys):
    train, val = sets
    config = tiny_config(tmp_path / "c.yaml", epochs=5)
    rc, out, err = run_main(["--config", config, "--train-dataset", train, "--val-dataset", val,
                             "--threads", "2", "--progress", "lines", "--print-freq", "5",
                             "--checkpoint-dir", str(tmp_path / "ck"), "--deterministic"],
                            capsys)
    assert rc == 0, err
    log = read_log(out)
    assert [row["epoch"] for row in log] == [0, 1, 2, 3, 4]
    for row in log:
        assert set(LOG_FIELDS) <= set(row)
        assert 0 <= row["data_wait_fraction"] <= 1 and row["images_per_s"] > 0
    assert log == [json.loads(line) for line in open(tmp_path / "ck" / "log.jsonl")]
    assert log[-1]["top_1"] >= 0.4, log           # chance is 0.1
    assert log[-1]["top_5"] >= log[-1]["top_1"]
    assert "epoch 4 step 10/10" in out            # plain progress lines off a terminal
    assert "epoch  res" in out                    # the final summary table
    state = torch.load(tmp_path / "ck" / "last.pt", weights_only=False)
    assert {"model", "optimizer", "schedule", "scaler", "loader"} <= set(state)
    assert state["loader"]["epoch"] == 5 and state["loader"]["batch"] == 0


def test_two_processes_with_torchrun(sets, tmp_path):
    train, val = sets
    config = tiny_config(tmp_path / "c.yaml", epochs=4)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         os.path.join(BENCH, "train_imagenet.py"), "--config", config, "--train-dataset",
         train, "--val-dataset", val, "--threads", "1", "--num-workers", "1",
         "--batch-size", "16", "--progress", "none", "--checkpoint-dir", str(tmp_path / "ck")],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = read_log(proc.stdout)
    assert [row["epoch"] for row in log] == [0, 1, 2, 3]      # rank 0 logs, once per epoch
    start = json.loads(next(line for line in proc.stdout.splitlines() if '"start"' in line))
    assert start["start"]["world_size"] == 2 and start["start"]["batch_size"] == 16
    # 320 images over 2 ranks in batches of 16: 10 steps of 32 images per epoch.
    state = torch.load(tmp_path / "ck" / "last.pt", weights_only=False)
    assert state["schedule"]["iters_per_epoch"] == 10 and state["loader"]["world_size"] == 2
    assert log[-1]["top_1"] >= 0.3, log


def test_resume_continues_bit_for_bit(sets, tmp_path, capsys):
    train, val = sets
    # Epoch 1 runs at 64 px (the ramp), so the resumed run must set the resolution too.
    config = tiny_config(tmp_path / "c.yaml", epochs=2, min_res=32, max_res=64, start_ramp=0,
                         end_ramp=1)
    common = ["--config", config, "--train-dataset", train, "--val-dataset", val,
              "--threads", "1", "--progress", "none", "--deterministic", "--mixup", "0.8",
              "--cutmix", "1.0"]
    whole, parts = tmp_path / "whole.jsonl", tmp_path / "parts.jsonl"
    assert run_main(common + ["--checkpoint-dir", str(tmp_path / "a"), "--trace", str(whole)],
                    capsys)[0] == 0
    assert run_main(common + ["--checkpoint-dir", str(tmp_path / "b"), "--trace", str(parts),
                              "--stop-after-epoch", "1"], capsys)[0] == 0
    rc, out, err = run_main(common + ["--checkpoint-dir", str(tmp_path / "b"), "--trace",
                                      str(parts), "--resume", str(tmp_path / "b" / "last.pt")],
                            capsys)
    assert rc == 0, err
    assert [row["epoch"] for row in read_log(out)] == [1]
    a = [json.loads(line) for line in open(whole)]
    b = [json.loads(line) for line in open(parts)]
    assert len(a) == 20 and a == b      # images (order, crops, mixing), targets, lr, loss
    assert {tuple(r["shape"]) for r in a if r["epoch"] == 1} == {(32, 3, 64, 64)}
    log_a = [json.loads(line) for line in open(tmp_path / "a" / "log.jsonl")]
    log_b = [json.loads(line) for line in open(tmp_path / "b" / "log.jsonl")]
    for ra, rb in zip(log_a, log_b):
        for key in ("epoch", "resolution", "lr", "train_loss", "top_1", "top_5"):
            assert ra[key] == rb[key]


# -- errors --------------------------------------------------------------------------------------

def test_clear_errors(sets, tmp_path, capsys):
    train, val = sets
    config = tiny_config(tmp_path / "c.yaml", epochs=1)
    base = ["--config", config, "--val-dataset", val, "--progress", "none"]
    rc, _, err = run_main(base + ["--train-dataset", str(tmp_path / "nope.beton")], capsys)
    assert rc == 2 and "nope.beton: no such file" in err
    junk = tmp_path / "junk.beton"
    junk.write_bytes(b"not a beton" * 100)
    rc, _, err = run_main(base + ["--train-dataset", str(junk)], capsys)
    assert rc == 2 and "junk.beton: not a readable .beton" in err
    rc, _, err = run_main(base + ["--train-dataset", train, "--relabel"], capsys)
    assert rc == 2 and "no field 'relabel'" in err
    rc, _, err = run_main(base + ["--train-dataset", train, "--resume", str(junk)], capsys)
    assert rc == 2 and "junk.beton: not a readable checkpoint" in err
    rc, _, err = run_main(base + ["--train-dataset", train, "--batch-size", "400"], capsys)
    assert rc == 2 and "no full batch of 400" in err
    rc, _, err = run_main(base + ["--train-dataset", train, "--cutmix", "1", "--batch-size",
                                  "15"], capsys)
    assert rc == 2 and "must be even" in err
    rc, _, err = run_main(["--config", str(tmp_path / "missing.yaml"), "--train-dataset", train,
                           "--val-dataset", val], capsys)
    assert rc == 2 and "missing.yaml: config file not found" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  batchsize: 3\n")
    rc, _, err = run_main(["--config", str(bad), "--train-dataset", train, "--val-dataset",
                           val], capsys)
    assert rc == 2 and "unknown key training.batchsize" in err
    rc, _, err = run_main(base + ["--train-dataset", train, "--epochs", "1"], capsys)
    assert rc == 0, err          # the tiny config's lr_peak_epoch is 1
    config3 = tiny_config(tmp_path / "c3.yaml", epochs=1)
    text = open(config3).read().replace("lr_peak_epoch: 1", "lr_peak_epoch: 2")
    open(config3, "w").write(text)
    rc, _, err = run_main(["--config", config3, "--train-dataset", train, "--val-dataset", val],
                          capsys)
    assert rc == 2 and "lr_peak_epoch 2 must be within [0, training.epochs = 1]" in err
    if not torch.cuda.is_available():
        rc, _, err = run_main(base + ["--train-dataset", train, "--device", "cuda"], capsys)
        assert rc == 2 and "no CUDA GPU" in err
    with pytest.raises(ValueError, match="does not divide into 3 processes"):
        train_imagenet.batch_per_process(None, 64, 512, 3)
    assert train_imagenet.batch_per_process(None, 63, 512, 3) == 21
    assert train_imagenet.batch_per_process(None, None, 512, 8) == 512


# -- FFCV's formulas, copied as FFCV writes them (libffcv/ffcv-imagenet train_imagenet.py) ---------

def ffcv_get_cyclic_lr(epoch, lr, epochs, lr_peak_epoch):
    xs = [0, lr_peak_epoch, epochs]
    ys = [1e-4 * lr, lr, 0]
    return np.interp([epoch], xs, ys)[0]


def ffcv_iteration_lrs(epoch, iters, lr, epochs, lr_peak_epoch):
    lr_start = ffcv_get_cyclic_lr(epoch, lr, epochs, lr_peak_epoch)
    lr_end = ffcv_get_cyclic_lr(epoch + 1, lr, epochs, lr_peak_epoch)
    return np.interp(np.arange(iters), [0, iters], [lr_start, lr_end])


def ffcv_get_resolution(epoch, min_res, max_res, end_ramp, start_ramp):
    assert min_res <= max_res

    if epoch <= start_ramp:
        return min_res

    if epoch >= end_ramp:
        return max_res

    # otherwise, linearly interpolate to the nearest multiple of 32
    interp = np.interp([epoch], [start_ramp, end_ramp], [min_res, max_res])
    final_res = int(np.round(interp[0] / 32)) * 32
    return final_res


class FFCVBlurPoolConv2d(torch.nn.Module):
    def __init__(self, conv):
        super().__init__()
        default_filter = torch.tensor([[[[1, 2, 1], [2, 4, 2], [1, 2, 1]]]]) / 16.0
        filt = default_filter.repeat(conv.in_channels, 1, 1, 1)
        self.conv = conv
        self.register_buffer('blur_filter', filt)

    def forward(self, x):
        blurred = torch.nn.functional.conv2d(x, self.blur_filter, stride=1, padding=(1, 1),
                                             groups=self.conv.in_channels, bias=None)
        return self.conv.forward(blurred)


def ffcv_apply_blurpool(mod):
    for (name, child) in mod.named_children():
        if isinstance(child, torch.nn.Conv2d) and (np.max(child.stride) > 1 and child.in_channels >= 16):  # noqa: E501
            setattr(mod, name, FFCVBlurPoolConv2d(child))
        else:
            ffcv_apply_blurpool(child)


@pytest.mark.parametrize("name,lr,batch,world,wd,epochs,ramp", [
    ("rn50_16", 1.7, 512, 8, 1e-4, 16, (11, 13)), ("rn50_88", 1.7, 512, 8, 1e-4, 88, (65, 76)),
    ("rn18_16", 0.5, 1024, 1, 5e-5, 16, (11, 13)), ("rn18_56", 0.5, 1024, 1, 5e-5, 56, (41, 48))])
def test_schedules_match_ffcv(name, lr, batch, world, wd, epochs, ramp):
    config = recipe.load_config(recipe.CONFIG_DIR / f"{name}_epochs.yaml")
    t = config["training"]
    assert (config["lr"]["lr"], t["batch_size"], config["dist"]["world_size"],
            t["weight_decay"], t["epochs"], t["label_smoothing"], t["momentum"],
            t["use_blurpool"], config["validation"]["resolution"],
            config["validation"]["lr_tta"], config["lr"]["lr_peak_epoch"]) == \
        (lr, batch, world, wd, epochs, 0.1, 0.9, 1, 256, True, 2)
    assert (config["resolution"]["start_ramp"], config["resolution"]["end_ramp"]) == ramp
    assert recipe.scaled_lr(config, batch * world) == lr
    assert recipe.scaled_lr(config, batch * world // 2) == pytest.approx(lr / 2)
    iters = 1_281_167 // (batch * world)
    for epoch in (0, 1, 2, 3, epochs // 2, epochs - 1):
        ours = recipe.iteration_lrs(config, epoch, iters)
        theirs = ffcv_iteration_lrs(epoch, iters, lr, epochs, 2)
        for ix in (0, 1, iters // 3, iters - 1):
            assert ours[ix] == theirs[ix]
    assert recipe.iteration_lrs(config, epochs - 1, iters)[-1] > 0
    assert recipe.epoch_lr(config, epochs) == 0
    r = config["resolution"]
    resolutions = [recipe.resolution(config, e) for e in range(epochs)]
    assert resolutions == [ffcv_get_resolution(e, r["min_res"], r["max_res"], r["end_ramp"],
                                               r["start_ramp"]) for e in range(epochs)]
    assert resolutions[0] == 160 and resolutions[-1] == 192
    assert all(res % 32 == 0 for res in resolutions)


def test_no_weight_decay_on_batchnorm():
    model = recipe.make_model("resnet50", 1000, blurpool=True)
    names = {id(p): n for n, p in model.named_parameters()}
    bn = {id(p) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)
          for p in m.parameters(recurse=False)}
    no_wd, wd = recipe.param_groups(model, 1e-4, "ffcv")
    assert no_wd["weight_decay"] == 0 and wd["weight_decay"] == 1e-4
    # FFCV's rule, as its create_optimizer writes it: names containing "bn".
    assert [names[id(p)] for p in no_wd["params"]] == \
        [k for k, _ in model.named_parameters() if "bn" in k]
    assert {id(p) for p in no_wd["params"]} <= bn          # only BatchNorm parameters
    assert any("downsample.1" in names[id(p)] for p in wd["params"])   # FFCV's blind spot
    no_wd, wd = recipe.param_groups(model, 1e-4, "modules")
    assert {id(p) for p in no_wd["params"]} == bn
    assert len(no_wd["params"]) + len(wd["params"]) == len(list(model.parameters()))


@pytest.mark.parametrize("arch", ["resnet50", "resnet18", "resnet_tiny"])
def test_blurpool_placed_as_ffcv(arch):
    ours = recipe.make_model(arch, 10, blurpool=True)
    torch.manual_seed(0)
    theirs = recipe.make_model(arch, 10, blurpool=False)
    ffcv_apply_blurpool(theirs)

    def wrapped(model, cls):
        return [n for n, m in model.named_modules() if isinstance(m, cls)]
    names = wrapped(ours, recipe.BlurPoolConv2d)
    assert names == wrapped(theirs, FFCVBlurPoolConv2d)
    assert "conv1" not in names and "layer2.0.downsample.0" in names
    theirs.load_state_dict(ours.state_dict())
    ours.eval(), theirs.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))


# -- label-aware switches ------------------------------------------------------------------------

def _relabel_file(path):
    from fastdata.fields import LabelMapField
    maps_rng = np.random.default_rng(5)

    def label_map(i, image, label):
        order = maps_rng.random((CLASSES, 15, 15))
        order[label] = -1      # the image's own class is every cell's top class
        ids = order.argsort(axis=0)[:5].astype(np.float32)
        scores = np.sort(maps_rng.normal(0, 3, (5, 15, 15)), axis=0)[::-1].astype(np.float32)
        return np.stack([scores, ids])
    return synthetic_classes.write_classes(str(path), 64, CLASSES, seed=2,
                                           extra={"relabel": (LabelMapField(), label_map)})


def _reinforced_file(plain, path):
    from fastdata.writers.reinforce import reinforce

    class Teacher(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.fc = torch.nn.Linear(3, CLASSES)

        def forward(self, x):
            return self.fc(x.mean(dim=(2, 3)))
    reinforce(plain, Teacher(), str(path), num_augs=2, top_k=3, batch_size=16, device="cpu",
              output_size=32, num_workers=2, progress=False, mixup_p=0.5, cutmix_p=0.5)
    return str(path)


@pytest.fixture(scope="module")
def label_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("labels")
    plain = synthetic_classes.write_classes(str(root / "plain.beton"), 64, CLASSES, seed=3)
    return {"relabel": _relabel_file(root / "relabel.beton"),
            "reinforce": _reinforced_file(plain, root / "reinforce.beton"), "plain": plain}


SWITCHES = {"mixup+cutmix": ("plain", ["--mixup", "0.8", "--cutmix", "1.0"]),
            "cutmix elem": ("plain", ["--cutmix", "1.0", "--mixup-mode", "elem"]),
            "relabel": ("relabel", ["--relabel"]),
            "relabel+cutmix": ("relabel", ["--relabel", "--cutmix", "1.0"]),
            "reinforce": ("reinforce", ["--reinforce"])}


@pytest.mark.parametrize("switch", sorted(SWITCHES))
def test_label_switches_end_to_end(switch, label_sets, sets, tmp_path, capsys):
    which, flags = SWITCHES[switch]
    path = label_sets[which]
    args = train_imagenet.parse_args(["--config", "x", "--train-dataset", path,
                                      "--val-dataset", path] + flags)
    labels = data.LabelOptions(args.mixup, args.cutmix, args.cutmix_minmax, args.mixup_prob,
                               args.mixup_switch_prob, args.mixup_mode, args.mixup_off_epoch,
                               args.relabel, args.reinforce, args.densify)
    train = data.train_data(path, res=32, batch_size=16, num_workers=2,
                            device=torch.device("cpu"), dtype=torch.float32, distributed=False,
                            seed=0, num_classes=CLASSES, label_smoothing=0.1, labels=labels)
    for batch in train.loader:
        images, target = train.split(batch)
        assert images.shape == (16, 3, 32, 32) and images.dtype == torch.float32
        assert target.shape == (16, CLASSES) and target.dtype == torch.float32
        assert torch.allclose(target.sum(1), torch.ones(16), atol=1e-5)
        assert (target >= 0).all()
    train.loader.close()
    config = tiny_config(tmp_path / "c.yaml", epochs=1)
    rc, out, err = run_main(["--config", config, "--train-dataset", path, "--val-dataset",
                             sets[1], "--threads", "1", "--batch-size", "16", "--progress",
                             "none", "--num-classes", str(CLASSES)] + flags, capsys)
    assert rc == 0, err
    (row,) = read_log(out)
    assert np.isfinite(row["train_loss"]) and row["train_loss"] > 0


def test_soft_cross_entropy_matches_label_smoothing():
    logits = torch.randn(8, CLASSES)
    labels = torch.randint(0, CLASSES, (8,))
    smooth = torch.full((8, CLASSES), 0.1 / CLASSES).scatter_(1, labels[:, None],
                                                             0.9 + 0.1 / CLASSES)
    assert torch.allclose(recipe.soft_cross_entropy(logits, smooth),
                          torch.nn.CrossEntropyLoss(label_smoothing=0.1)(logits, labels))


# -- the loader-bound ratio ------------------------------------------------------------------------

def test_loader_bound_ratio_on_cpu(capsys):
    rows = loader_bound.measure(loader_bound.parse_args(
        ["--tiny", "--resolutions", "32", "--rounds", "5"]))
    out = capsys.readouterr().out
    assert "real/synthetic" in out
    sources = {r["source"]: r for r in rows}
    assert {"synthetic", "fastdata cpu", "torchvision DataLoader"} <= set(sources)
    for name in ("fastdata cpu", "torchvision DataLoader"):
        assert 0 < sources[name]["ratio"] <= 1.2, rows
        assert f"{sources[name]['ratio']:.3f}" in out
