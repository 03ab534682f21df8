"""A projection, not a measurement: wall time of a recipe's training epochs over ImageNet on
8 GPUs, from per-GPU images/s measured at each resolution, beside FFCV's published 8xA100 times.

Assumptions (printed with the numbers): the 8 GPUs scale linearly (no communication cost), each
GPU is fed as fast as the measured one (same cores per GPU), validation is left out, and a
resolution that was not measured runs at the speed of the nearest measured one scaled by pixel
count (FFCV's own per-epoch logs fall in proportion to pixel count: anchors.md section 1a).
"""
from __future__ import annotations

from typing import Callable, Mapping

IMAGENET_TRAIN_IMAGES = 1_281_167
# ffcv-imagenet README (minutes, whole run incl. validation): ResNet-50 on 8xA100, ResNet-18
# on 1xA100.
FFCV_PUBLISHED_MIN = {"resnet50": {16: 14.9, 24: 21.7, 32: 28.7, 40: 35.6, 56: 49.4, 88: 77.2},
                      "resnet18": {16: 35.0, 24: 51.6, 32: 68.9, 40: 85.5, 56: 119.4,
                                   88: 187.3}}
FFCV_PUBLISHED_GPUS = {"resnet50": 8, "resnet18": 1}


def per_gpu_rate(rates: Mapping[int, float], res: int) -> tuple[float, bool]:
    """(images/s at ``res``, whether it was measured) from {resolution: images/s}."""
    if res in rates:
        return rates[res], True
    nearest = min(rates, key=lambda r: abs(r - res))
    return rates[nearest] * (nearest / res) ** 2, False


def project_minutes(rates: Mapping[int, float], resolution_of: Callable[[int], int],
                    epochs: int, gpus: int = 8,
                    images: int = IMAGENET_TRAIN_IMAGES) -> tuple[float, bool]:
    """(projected training minutes, whether every resolution used was measured)."""
    seconds, all_measured = 0.0, True
    for epoch in range(epochs):
        rate, measured = per_gpu_rate(rates, resolution_of(epoch))
        all_measured &= measured
        seconds += images / (rate * gpus)
    return seconds / 60, all_measured


def projection_table(rates: Mapping[int, float], configs: Mapping[int, dict],
                     resolution_fn: Callable[[dict, int], int], arch: str = "resnet50",
                     gpus: int = 8) -> str:
    """Lines of text: per recipe (epochs -> config), projected minutes on ``gpus`` GPUs and
    FFCV's published minutes for ``arch`` (ResNet-50: 8xA100, ResNet-18: 1xA100)."""
    if not rates:
        return "projection: no per-GPU images/s measured"
    measured = ", ".join(f"{r}px {v:,.0f}" for r, v in sorted(rates.items()))
    lines = [f"PROJECTION (not measured): {gpus} GPUs x measured per-GPU img/s ({measured}), "
             f"{IMAGENET_TRAIN_IMAGES:,} images/epoch, linear scaling, validation excluded",
             f"{'recipe':>10} {'projected min':>14} "
             f"{f'FFCV {FFCV_PUBLISHED_GPUS.get(arch, 8)}xA100 min':>16}"]
    for epochs, config in sorted(configs.items()):
        minutes, exact = project_minutes(rates, lambda e: resolution_fn(config, e), epochs, gpus)
        note = "" if exact else "  (unmeasured resolutions scaled by pixel count)"
        published = FFCV_PUBLISHED_MIN.get(arch, {}).get(epochs)
        lines.append(f"{epochs:>4} epochs {minutes:>14.1f} "
                     f"{published if published is not None else '-':>16}{note}")
    return "\n".join(lines)
