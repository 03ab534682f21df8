#!/usr/bin/env python
"""FFCV's ResNet-50 / ResNet-18 ImageNet recipes (libffcv/ffcv-imagenet) trained with fastdata.

    python bench/train_imagenet.py --config rn50_16 --train-dataset train.beton \
        --val-dataset val.beton --checkpoint-dir runs/rn50_16
    torchrun --nproc_per_node=8 bench/train_imagenet.py --config rn50_88 ...   # DDP
    python bench/train_imagenet.py ... --resume runs/rn50_16/last.pt

The schedules, BlurPool, parameter groups and loaders are in imagenet_recipe.py and
imagenet_loaders.py; this file is the training program: processes, steps, validation,
checkpoints, logs.  One JSON line per epoch goes to stdout and to <checkpoint-dir>/log.jsonl.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import imagenet_loaders as data  # noqa: E402
import imagenet_recipe as recipe  # noqa: E402
from train_projection import projection_table  # noqa: E402

LOG_FIELDS = ("epoch", "resolution", "lr", "train_loss", "top_1", "top_5", "images_per_s",
              "epoch_seconds", "data_wait_fraction")


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", required=True,
                   help="a YAML file, or a name in bench/configs (rn50_16 ... rn18_88)")
    p.add_argument("--train-dataset", required=True)
    p.add_argument("--val-dataset", required=True)
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"],
                   help="auto: bf16 autocast on a GPU with bf16, else fp16 + GradScaler; "
                        "fp32 on the CPU")
    p.add_argument("--batch-size", type=int, help="per process (default: the config's)")
    p.add_argument("--global-batch-size", type=int,
                   help="over all processes; must divide by the number of processes")
    p.add_argument("--val-batch-size", type=int, help="per process (default: the config's)")
    p.add_argument("--epochs", type=int, help="override training.epochs (the schedule "
                   "stretches, as FFCV's --training.epochs)")
    p.add_argument("--stop-after-epoch", type=int,
                   help="end the run after this many epochs (the schedule is unchanged)")
    p.add_argument("--arch", help="override model.arch (torchvision name, or resnet_tiny)")
    p.add_argument("--num-classes", type=int, help="default: 1 + the largest train label")
    p.add_argument("--num-workers", type=int, help="loader threads (default: the config's)")
    p.add_argument("--seed", type=int, default=0, help="model init and every data decision")
    p.add_argument("--no-wd-rule", default="ffcv", choices=["ffcv", "modules"],
                   help="ffcv: no weight decay on parameters named *bn* (FFCV's test); "
                        "modules: on every BatchNorm parameter")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--deterministic", action="store_true",
                   help="torch.use_deterministic_algorithms (and no cudnn autotuning)")
    p.add_argument("--threads", type=int, help="torch intra-op threads")
    p.add_argument("--checkpoint-dir", default=None,
                   help="last.pt (every epoch) and log.jsonl go here")
    p.add_argument("--resume", help="a checkpoint (last.pt) to continue from")
    p.add_argument("--trace", help="write per-step JSON lines (labels, sha256 of the images, "
                                   "loss, lr) here: for checking resumes")
    p.add_argument("--progress", default="auto", choices=["auto", "bar", "lines", "none"],
                   help="auto: a tqdm bar on a terminal, plain lines otherwise")
    p.add_argument("--print-freq", type=int, default=50, help="steps between plain lines")
    lab = p.add_argument_group("label-aware switches (timm's train.py names for mixing)")
    lab.add_argument("--mixup", type=float, default=0.0, help="Mixup alpha")
    lab.add_argument("--cutmix", type=float, default=0.0, help="CutMix alpha")
    lab.add_argument("--cutmix-minmax", type=float, nargs=2, default=None)
    lab.add_argument("--mixup-prob", type=float, default=1.0)
    lab.add_argument("--mixup-switch-prob", type=float, default=0.5)
    lab.add_argument("--mixup-mode", default="batch", choices=["batch", "pair", "elem"])
    lab.add_argument("--mixup-off-epoch", type=int, default=None)
    lab.add_argument("--relabel", action="store_true",
                     help="ReLabel soft targets from the file's relabel field")
    lab.add_argument("--reinforce", action="store_true",
                     help="replay the file's reinforce field (ReplayedCrop + ReplayTargets)")
    lab.add_argument("--densify", default="smooth", choices=["smooth", "zeros", "renorm"])
    return p.parse_args(argv)


def config_path(name: str) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    return recipe.CONFIG_DIR / f"{name}_epochs.yaml"


class Run:
    """Process group, device and rank bookkeeping (torchrun's environment variables)."""

    def __init__(self, device_name: str):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.distributed = self.world_size > 1
        device = recipe.resolve_device(device_name)
        if device.type == "cuda":
            if self.local_rank >= torch.cuda.device_count():
                raise RuntimeError(f"local rank {self.local_rank} has no GPU: torch sees "
                                   f"{torch.cuda.device_count()}")
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        self.device = device
        if self.distributed:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, *values: float) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.distributed:
            dist.all_reduce(t)
        return t.tolist()

    def close(self) -> None:
        if self.distributed:
            dist.destroy_process_group()


class Progress:
    """A tqdm bar on a terminal, else a plain line every ``every`` steps (rank 0 only)."""

    def __init__(self, mode: str, enabled: bool, every: int):
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "lines"
        self.mode = mode if enabled else "none"
        self.every = max(1, every)
        self.bar = None

    def start(self, epoch: int, total: int, first: int) -> None:
        self.epoch, self.total, self.t0 = epoch, total, time.perf_counter()
        if self.mode == "bar":
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=first, desc=f"epoch {epoch}", leave=False)

    def step(self, ix: int, loss: torch.Tensor, lr: float, images: int) -> None:
        if self.mode == "bar":
            self.bar.update(1)
            if ix % self.every == 0:
                self.bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.4f}")
        elif self.mode == "lines" and (ix % self.every == 0 or ix + 1 == self.total):
            rate = images / max(time.perf_counter() - self.t0, 1e-9)
            print(f"epoch {self.epoch} step {ix + 1}/{self.total} loss {loss.item():.4f} "
                  f"lr {lr:.5f} {rate:,.0f} img/s", flush=True)

    def end(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def evaluate(model: torch.nn.Module, val: data.TrainData, run: Run,
             precision: recipe.Precision, lr_tta: bool) -> tuple[float, float]:
    """(top-1, top-5) over the validation file; FFCV's val_loop (flip TTA sums the logits)."""
    model.eval()
    correct1 = correct5 = count = 0.0
    with torch.no_grad(), precision.autocast():
        for batch in val.loader:
            images, target = val.split(batch)
            output = model(images)
            if lr_tta:
                output = output + model(torch.flip(images, dims=[3]))
            top5 = output.float().topk(min(5, output.shape[1]), dim=1).indices
            hits = top5 == target.view(-1, 1)
            correct1 += hits[:, 0].sum().item()
            correct5 += hits.any(dim=1).sum().item()
            count += target.numel()
    correct1, correct5, count = run.sum(correct1, correct5, count)
    return correct1 / count, correct5 / count


def save_checkpoint(path: Path, state: dict) -> None:
    """Written to a temporary name, then renamed: a crash never leaves half a checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def summary(history: list[dict]) -> str:
    head = (f"{'epoch':>5} {'res':>4} {'lr':>8} {'loss':>7} {'top1':>6} {'top5':>6} "
            f"{'img/s':>9} {'sec':>7} {'wait':>6}")
    rows = [f"{h['epoch']:>5} {h['resolution']:>4} {h['lr']:>8.4f} {h['train_loss']:>7.4f} "
            f"{h['top_1']:>6.3f} {h['top_5']:>6.3f} {h['images_per_s']:>9,.0f} "
            f"{h['epoch_seconds']:>7.1f} {h['data_wait_fraction']:>6.1%}" for h in history]
    return "\n".join([head] + rows)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    try:
        config = recipe.load_config(config_path(args.config))
    except recipe.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.epochs is not None:
        config["training"]["epochs"] = args.epochs
    if args.arch is not None:
        config["model"]["arch"] = args.arch
    try:
        recipe.check_config(config, f"{args.config} with --epochs {args.epochs}")
    except recipe.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    training = config["training"]
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True      # as FFCV

    try:
        run = Run(args.device)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        return train(args, config, training, run)
    except (data.DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        run.close()


def batch_per_process(batch_size: Optional[int], global_batch_size: Optional[int],
                      config_batch_size: int, world_size: int) -> int:
    """The batch of each process: --global-batch-size / world size (which must divide), else
    --batch-size, else the config's training.batch_size (FFCV's, per process)."""
    if global_batch_size is not None:
        if batch_size is not None:
            raise ValueError("give --batch-size (per process) or --global-batch-size, not both")
        if global_batch_size <= 0 or global_batch_size % world_size:
            raise ValueError(f"--global-batch-size {global_batch_size} does not divide into "
                             f"{world_size} processes")
        return global_batch_size // world_size
    batch_size = config_batch_size if batch_size is None else batch_size
    if batch_size <= 0:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    return batch_size


def train(args: argparse.Namespace, config: dict, training: dict, run: Run) -> int:
    device = run.device
    precision = recipe.choose_precision(args.precision, device)
    batch_size = batch_per_process(args.batch_size, args.global_batch_size,
                                   training["batch_size"], run.world_size)
    global_batch = batch_size * run.world_size
    lr_peak = recipe.scaled_lr(config, global_batch)
    labels = data.LabelOptions(args.mixup, args.cutmix, args.cutmix_minmax, args.mixup_prob,
                               args.mixup_switch_prob, args.mixup_mode, args.mixup_off_epoch,
                               args.relabel, args.reinforce, args.densify)
    num_classes = args.num_classes or data.num_classes_of(args.train_dataset)
    workers = config["data"]["num_workers"] if args.num_workers is None else args.num_workers
    in_memory = bool(config["data"]["in_memory"])
    epochs = training["epochs"]
    checkpoint = read_checkpoint(args.resume, config, device) if args.resume else None
    start_epoch = int(checkpoint["epoch"]) if checkpoint else 0

    # Built at the first epoch's resolution (a resumed run's, too); each epoch then sets its own.
    train_set = data.train_data(
        args.train_dataset, res=recipe.resolution(config, start_epoch), batch_size=batch_size,
        num_workers=workers, device=device, dtype=precision.input_dtype,
        distributed=run.distributed, seed=args.seed, num_classes=num_classes,
        label_smoothing=training["label_smoothing"], labels=labels, in_memory=in_memory)
    val_set = data.val_data(
        args.val_dataset, res=config["validation"]["resolution"],
        batch_size=args.val_batch_size or config["validation"]["batch_size"],
        num_workers=workers, device=device, dtype=precision.input_dtype,
        distributed=run.distributed, in_memory=in_memory)
    iters = len(train_set.loader)

    torch.manual_seed(args.seed)
    model = recipe.make_model(config["model"]["arch"], num_classes,
                              bool(training["use_blurpool"]))
    model = model.to(device=device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(recipe.param_groups(model, training["weight_decay"],
                                                    args.no_wd_rule),
                                lr=1, momentum=training["momentum"])
    schedule = recipe.LRSchedule(config, lr_peak, iters)
    net = model
    if run.distributed:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if args.compile:
        net = torch.compile(net)
    step = recipe.TrainStep(net, optimizer, precision, training["label_smoothing"])

    history = restore(checkpoint, model, optimizer, schedule, step, train_set) \
        if checkpoint else []
    ckpt_dir = Path(args.checkpoint_dir) if args.checkpoint_dir else None
    if ckpt_dir is not None and run.main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    trace = open(args.trace, "a") if args.trace and run.main else None
    progress = Progress(args.progress, run.main, args.print_freq)
    stop = epochs if args.stop_after_epoch is None else min(epochs, args.stop_after_epoch)
    if run.main:
        print(json.dumps({"start": {"config": str(config_path(args.config)),
                                    "arch": config["model"]["arch"], "device": str(device),
                                    "precision": precision.name, "world_size": run.world_size,
                                    "batch_size": batch_size, "lr_peak": lr_peak,
                                    "epochs": epochs, "start_epoch": start_epoch,
                                    "num_classes": num_classes}}), flush=True)

    for epoch in range(start_epoch, stop):
        res = recipe.resolution(config, epoch)
        train_set.set_resolution(res)
        lrs = recipe.iteration_lrs(config, epoch, iters, lr_peak)
        net.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        wait = 0.0
        progress.start(epoch, iters, 0)
        t0 = time.perf_counter()
        batches = iter(train_set.loader)
        if train_set.loader.epoch != epoch:
            raise RuntimeError(f"loader is at epoch {train_set.loader.epoch}, training at "
                               f"{epoch}: the checkpoint's loader state does not match")
        for ix in range(iters):
            tw = time.perf_counter()
            batch = next(batches)
            wait += time.perf_counter() - tw
            images, target = train_set.split(batch)
            for group in optimizer.param_groups:
                group["lr"] = lrs[ix]
            loss = step(images, target)
            loss_sum += loss
            schedule.epoch, schedule.iteration = epoch, ix + 1
            if trace is not None:
                trace.write(json.dumps(trace_record(epoch, ix, images, target, loss, lrs[ix]))
                            + "\n")
            progress.step(ix, loss, lrs[ix], (ix + 1) * global_batch)
        batches.close()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        progress.end()
        total_loss, total_wait, total_seconds = run.sum(loss_sum.item(), wait, seconds)
        top1, top5 = evaluate(net, val_set, run, precision, bool(config["validation"]["lr_tta"]))
        row = {"epoch": epoch, "resolution": res, "lr": float(lrs[-1]),
               "train_loss": total_loss / (iters * run.world_size), "top_1": top1,
               "top_5": top5, "images_per_s": iters * global_batch / seconds,
               "epoch_seconds": seconds, "data_wait_fraction": total_wait / total_seconds}
        history.append(row)
        if run.main:
            print(json.dumps(row), flush=True)
            if ckpt_dir is not None:
                with open(ckpt_dir / "log.jsonl", "a") as f:
                    f.write(json.dumps(row) + "\n")
                save_checkpoint(ckpt_dir / "last.pt", {
                    "epoch": epoch + 1, "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                    "scaler": step.scaler.state_dict(),
                    "loader": train_set.loader.state_dict(), "history": history,
                    "config": config, "arch": config["model"]["arch"],
                    "num_classes": num_classes, "world_size": run.world_size,
                    "torch_rng": torch.get_rng_state()})
        if run.distributed:
            dist.barrier()      # the checkpoint is complete before any rank goes on
    if trace is not None:
        trace.close()
    train_set.loader.close()
    val_set.loader.close()
    if run.main and history:
        print("\n" + summary(history))
        print_projection(history, config, run.world_size)
    return 0


def trace_record(epoch: int, ix: int, images: torch.Tensor, target: torch.Tensor,
                 loss: torch.Tensor, lr: float) -> dict:
    pixels = images.detach().float().cpu().contiguous().numpy().tobytes()
    return {"epoch": epoch, "step": ix, "lr": float(lr), "loss": float(loss).hex(),
            "shape": list(images.shape),
            "images_sha256": hashlib.sha256(pixels).hexdigest(),
            "target_sha256": hashlib.sha256(target.detach().float().cpu().contiguous()
                                            .numpy().tobytes()).hexdigest()}


def read_checkpoint(path: str, config: dict, device: torch.device) -> dict:
    """A checkpoint of this program, checked; DataError/ValueError name the file."""
    if not os.path.isfile(path):
        raise data.DataError(f"--resume {path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as e:
        raise data.DataError(f"--resume {path}: not a readable checkpoint "
                             f"({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or "loader" not in state or "model" not in state:
        raise data.DataError(f"--resume {path}: not a checkpoint of train_imagenet.py")
    if state["arch"] != config["model"]["arch"]:
        raise ValueError(f"--resume {path}: saved for arch {state['arch']}, this run is "
                         f"{config['model']['arch']}")
    return state


def restore(state: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            schedule: recipe.LRSchedule, step: recipe.TrainStep, train_set: data.TrainData
            ) -> list[dict]:
    """Load every state of a checkpoint; the loader continues at the checkpoint's epoch and
    batch (fastdata's state_dict: the same batches, crops and mixing as an uninterrupted run).
    Returns the log so far."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    step.scaler.load_state_dict(state["scaler"])
    train_set.loader.load_state_dict(state["loader"])
    torch.set_rng_state(state["torch_rng"].cpu())
    return list(state["history"])


def print_projection(history: list[dict], config: dict, world_size: int) -> None:
    rates: dict[int, list[float]] = {}
    for h in history[1:] or history:      # the first epoch includes compilation and warm-up
        rates.setdefault(h["resolution"], []).append(h["images_per_s"] / world_size)
    per_gpu = {r: sorted(v)[len(v) // 2] for r, v in rates.items()}
    arch = config["model"]["arch"]
    prefix = "rn50" if arch == "resnet50" else "rn18" if arch == "resnet18" else None
    if prefix is None:
        print(f"\n(no projection: {arch} is not one of FFCV's recipes)")
        return
    configs = {e: recipe.load_config(recipe.CONFIG_DIR / f"{prefix}_{e}_epochs.yaml")
               for e in (16, 88)}
    print("\n" + projection_table(per_gpu, configs, recipe.resolution, arch))


if __name__ == "__main__":
    sys.exit(main())
