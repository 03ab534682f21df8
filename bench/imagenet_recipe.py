"""FFCV's ImageNet recipe (libffcv/ffcv-imagenet, train_imagenet.py), as functions.

Shared by bench/train_imagenet.py, bench/loader_bound.py and bench/gpu_train_check.py.  Each
function says which part of FFCV's script it reproduces; tests/test_train_imagenet.py compares
them with FFCV's code copied verbatim.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

# Every key FFCV's configs use, with FFCV's defaults for the ones a config may leave out
# (train_imagenet.py's Section(...).params(...)).  Keys FFCV's script declares but never reads
# for this recipe (lr.step_*, training.bn_wd, logging.folder, dist.address/port) are accepted
# and ignored, as there.
DEFAULTS: dict[str, dict[str, Any]] = {
    "data": {"in_memory": 1, "num_workers": 12, "gpu": 0},
    "dist": {"world_size": 1, "address": "localhost", "port": "12355"},
    "logging": {"folder": "/tmp/", "log_level": 1},
    "lr": {"lr": 0.5, "lr_schedule_type": "cyclic", "lr_peak_epoch": 2, "step_ratio": 0.1,
           "step_length": 30},
    "model": {"arch": "resnet18", "pretrained": 0},
    "resolution": {"min_res": 160, "max_res": 160, "end_ramp": 0, "start_ramp": 0},
    "training": {"batch_size": 512, "bn_wd": 0, "distributed": 0, "epochs": 30,
                 "label_smoothing": 0.1, "momentum": 0.9, "optimizer": "sgd",
                 "weight_decay": 4e-5, "use_blurpool": 0, "eval_only": 0},
    "validation": {"lr_tta": 1, "resolution": 224, "batch_size": 512},
}


class ConfigError(ValueError):
    """A config file that is missing, unreadable, or has a key or value the recipe can't use."""


def load_config(path: str | Path) -> dict[str, dict[str, Any]]:
    """An FFCV-style YAML config (sections data, dist, lr, model, resolution, training,
    validation, logging) merged over FFCV's defaults.  Raises ConfigError naming the file."""
    import yaml
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found (the recipes are in {CONFIG_DIR})")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    config = {section: dict(values) for section, values in DEFAULTS.items()}
    for section, values in raw.items():
        if section not in DEFAULTS:
            raise ConfigError(f"{path}: unknown section {section!r} (known: {sorted(DEFAULTS)})")
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: section {section!r} must be a mapping")
        for key, value in values.items():
            if key not in DEFAULTS[section]:
                raise ConfigError(f"{path}: unknown key {section}.{key} (known: "
                                  f"{sorted(DEFAULTS[section])})")
            default = DEFAULTS[section][key]
            if isinstance(default, (int, float)) and not isinstance(default, bool):
                try:
                    value = type(default)(float(value)) if isinstance(default, float) \
                        else int(value)
                except (TypeError, ValueError):
                    raise ConfigError(f"{path}: {section}.{key} must be a number, got "
                                      f"{value!r}") from None
            config[section][key] = value
    check_config(config, str(path))
    return config


def check_config(config: dict, where: str) -> None:
    res, training, lr = config["resolution"], config["training"], config["lr"]
    if res["min_res"] > res["max_res"]:
        raise ConfigError(f"{where}: resolution.min_res {res['min_res']} > max_res "
                          f"{res['max_res']}")
    if lr["lr_schedule_type"] not in ("cyclic", "step"):
        raise ConfigError(f"{where}: lr.lr_schedule_type must be cyclic or step")
    if training["optimizer"] != "sgd":
        raise ConfigError(f"{where}: training.optimizer must be sgd (the only one FFCV has)")
    if lr["lr_schedule_type"] == "cyclic" and not 0 <= lr["lr_peak_epoch"] <= training["epochs"]:
        raise ConfigError(f"{where}: lr.lr_peak_epoch {lr['lr_peak_epoch']} must be within "
                          f"[0, training.epochs = {training['epochs']}]")
    for key in ("epochs", "batch_size"):
        if training[key] <= 0:
            raise ConfigError(f"{where}: training.{key} must be positive")


# -- schedules (FFCV: get_cyclic_lr, get_step_lr, train_loop's per-iteration interpolation,
#    get_resolution) ------------------------------------------------------------------------------

def epoch_lr(config: dict, epoch: float, lr: Optional[float] = None) -> float:
    """The learning rate at the start of ``epoch`` (FFCV's get_lr): ``cyclic`` goes linearly
    from 1e-4 * lr at epoch 0 to lr at lr_peak_epoch, then to 0 at the last epoch."""
    c = config["lr"]
    lr = c["lr"] if lr is None else lr
    epochs = config["training"]["epochs"]
    if c["lr_schedule_type"] == "step":
        if epoch >= epochs:
            return 0
        return c["step_ratio"] ** (epoch // c["step_length"]) * lr
    return float(np.interp([epoch], [0, c["lr_peak_epoch"], epochs], [1e-4 * lr, lr, 0])[0])


def iteration_lrs(config: dict, epoch: int, iters: int, lr: Optional[float] = None
                  ) -> np.ndarray:
    """The lr of each of an epoch's ``iters`` iterations: FFCV's train_loop interpolates
    linearly from get_lr(epoch) to get_lr(epoch + 1) over the epoch."""
    start, end = epoch_lr(config, epoch, lr), epoch_lr(config, epoch + 1, lr)
    return np.interp(np.arange(iters), [0, iters], [start, end])


def resolution(config: dict, epoch: int) -> int:
    """The training resolution of ``epoch`` (FFCV's get_resolution): min_res up to and including
    start_ramp, max_res from end_ramp on, linear in between rounded to a multiple of 32
    (numpy's round: halves go to the even multiple)."""
    r = config["resolution"]
    if epoch <= r["start_ramp"]:
        return r["min_res"]
    if epoch >= r["end_ramp"]:
        return r["max_res"]
    interp = np.interp([epoch], [r["start_ramp"], r["end_ramp"]], [r["min_res"], r["max_res"]])
    return int(np.round(interp[0] / 32)) * 32


def scaled_lr(config: dict, global_batch: int) -> float:
    """lr scaled linearly with the global batch: FFCV's lr is for training.batch_size x
    dist.world_size images per step (4096 for ResNet-50, 1024 for ResNet-18)."""
    reference = config["training"]["batch_size"] * config["dist"]["world_size"]
    return config["lr"]["lr"] * global_batch / reference


class LRSchedule:
    """Per-iteration lr of the recipe, with the position kept for checkpoints."""

    def __init__(self, config: dict, lr: float, iters_per_epoch: int):
        self.config, self.lr, self.iters_per_epoch = config, lr, iters_per_epoch
        self.epoch, self.iteration = 0, 0

    def lr_at(self, epoch: int, iteration: int) -> float:
        return float(iteration_lrs(self.config, epoch, self.iters_per_epoch, self.lr)[iteration])

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "iteration": self.iteration, "lr": self.lr,
                "iters_per_epoch": self.iters_per_epoch}

    def load_state_dict(self, state: dict) -> None:
        if state["iters_per_epoch"] != self.iters_per_epoch or state["lr"] != self.lr:
            raise ValueError(f"checkpoint schedule has {state['iters_per_epoch']} iterations "
                             f"per epoch at lr {state['lr']}, this run {self.iters_per_epoch} "
                             f"at {self.lr}: batch size or world size changed")
        self.epoch, self.iteration = state["epoch"], state["iteration"]


# -- model (FFCV: BlurPoolConv2d, create_model_and_scaler, create_optimizer) ----------------------

class BlurPoolConv2d(torch.nn.Module):
    """A fixed 3x3 binomial blur (stride 1, depthwise) before a strided conv, as FFCV's."""

    def __init__(self, conv: torch.nn.Conv2d):
        super().__init__()
        default_filter = torch.tensor([[[[1, 2, 1], [2, 4, 2], [1, 2, 1]]]]) / 16.0
        self.conv = conv
        self.register_buffer("blur_filter", default_filter.repeat(conv.in_channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blurred = F.conv2d(x, self.blur_filter.to(x.dtype), stride=1, padding=(1, 1),
                           groups=self.conv.in_channels, bias=None)
        return self.conv(blurred)


def apply_blurpool(module: torch.nn.Module) -> None:
    """Wrap every Conv2d with a stride > 1 and at least 16 input channels (FFCV's rule: the
    stem conv, with 3 inputs, is left alone), in place."""
    for name, child in module.named_children():
        if isinstance(child, torch.nn.Conv2d) and max(child.stride) > 1 \
                and child.in_channels >= 16:
            setattr(module, name, BlurPoolConv2d(child))
        else:
            apply_blurpool(child)


def make_model(arch: str, num_classes: int, blurpool: bool) -> torch.nn.Module:
    """A torchvision model by name (resnet50, resnet18, ...), or ``resnet_tiny`` (torchvision's
    ResNet with one BasicBlock per stage: the same module names, for CPU tests), randomly
    initialised, with FFCV's BlurPool when asked."""
    import torchvision
    if arch == "resnet_tiny":
        from torchvision.models.resnet import BasicBlock, ResNet
        model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=num_classes)
    else:
        builder = getattr(torchvision.models, arch, None)
        if builder is None or not callable(builder):
            raise ValueError(f"unknown model arch {arch!r}: not a torchvision.models builder "
                             f"(or resnet_tiny)")
        model = builder(weights=None, num_classes=num_classes)
    if blurpool:
        apply_blurpool(model)
    return model


def param_groups(model: torch.nn.Module, weight_decay: float, rule: str = "ffcv") -> list[dict]:
    """SGD parameter groups: BatchNorm parameters without weight decay, the rest with it.

    rule "ffcv": FFCV's test, a parameter whose name contains "bn" (in torchvision's ResNets
    that misses the downsample BatchNorms, ``downsample.1``, which therefore get weight decay in
    FFCV's runs).  rule "modules": every parameter of a BatchNorm module."""
    named = list(model.named_parameters())
    if rule == "ffcv":
        no_wd = {id(v) for k, v in named if "bn" in k}
    elif rule == "modules":
        no_wd = {id(p) for m in model.modules()
                 if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                 for p in m.parameters(recurse=False)}
    else:
        raise ValueError(f"unknown no-weight-decay rule {rule!r}: ffcv or modules")
    return [{"params": [v for _, v in named if id(v) in no_wd], "weight_decay": 0.0},
            {"params": [v for _, v in named if id(v) not in no_wd],
             "weight_decay": weight_decay}]


# -- precision ------------------------------------------------------------------------------------

@dataclass
class Precision:
    """How steps run: ``dtype`` is the autocast dtype (None: fp32, no autocast), ``scaled``
    whether a GradScaler is used (fp16 only)."""
    name: str
    dtype: Optional[torch.dtype]
    device_type: str

    @property
    def scaled(self) -> bool:
        return self.dtype is torch.float16

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    @property
    def input_dtype(self) -> torch.dtype:
        """What the loader normalises images to (FFCV: fp16, its autocast dtype)."""
        return torch.float32 if self.dtype is None else self.dtype


def choose_precision(name: str, device: torch.device) -> Precision:
    """auto: bf16 autocast on a GPU that supports it, fp16 + GradScaler on one that doesn't,
    fp32 on the CPU (CPU bf16 autocast is slower than fp32 on CPUs without AMX/AVX512-BF16)."""
    if name == "auto":
        if device.type == "cuda":
            name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            name = "fp32"
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
    if name not in dtypes:
        raise ValueError(f"unknown precision {name!r}: auto, bf16, fp16 or fp32")
    if name == "fp16" and device.type != "cuda":
        raise ValueError("fp16 needs a CUDA device (on the CPU use bf16 or fp32)")
    return Precision(name, dtypes[name], device.type)


def resolve_device(name: str) -> torch.device:
    """auto: cuda if available, else cpu.  Asking for cuda without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device {name} was asked for but torch sees no CUDA GPU "
                           f"(torch {torch.__version__}, built with CUDA "
                           f"{torch.version.cuda}); use --device cpu or auto")
    return device


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -sum(targets * log_softmax(logits)) (targets [B, C], rows sum
    to 1; computed in float32)."""
    return torch.sum(-targets.float() * torch.log_softmax(logits.float(), dim=1), dim=1).mean()


class TrainStep:
    """One SGD step of the recipe: autocast forward, loss, (scaled) backward, step."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 precision: Precision, label_smoothing: float):
        self.model, self.optimizer, self.precision = model, optimizer, precision
        self.hard_loss = torch.nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.scaler = torch.amp.GradScaler("cuda", enabled=precision.scaled)

    def __call__(self, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        with self.precision.autocast():
            output = self.model(images)
        loss = soft_cross_entropy(output, target) if target.dim() == 2 else \
            self.hard_loss(output.float(), target)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach()
