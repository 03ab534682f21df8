"""GPU checks of the loader, in one run on a machine with a CUDA device (prepared for the lent
GPU machine; it exits with a message where there is none).

1. pinned memory: the ring slots that feed ToDevice are page-locked;
2. overlap: a loop that runs a matmul stream while taking batches is not slowed down more than
   the loader's own CPU work explains (copies run on the loader's side stream);
3. bf16 normalisation on the GPU matches the CPU reference;
4. images/s of the training pipeline (RandomResizedCrop 224 + flip, uint8 -> GPU, bf16
   normalise) with all the machine's cores.

    python bench/gpu_check.py --data DIR_WITH_TRAIN_FOLDER [--threads 16] [--images 4000]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="ImageNet-style folder (default: a synthetic one)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 0

    import fastdata
    from fastdata.demo import make_imagenet_like
    from fastdata.ops import (IntDecoder, Normalize, RandomHorizontalFlip, RandomResizedCrop,
                              Squeeze, ToDevice, ToTensor, ToTorchImage)
    from fastdata.writers import write_imagenet

    work = tempfile.mkdtemp(prefix="fastdata-gpu-")
    data = args.data or make_imagenet_like(os.path.join(work, "inet"), classes=20,
                                           per_class=args.images // 20)
    path = os.path.join(work, "train.beton")
    write_imagenet(data, path, image_field=fastdata.RGBImageField(
        write_mode="proportion", max_resolution=500), limit=args.images, progress=False)

    def loader(dtype=torch.bfloat16):
        return fastdata.Loader(path, batch_size=args.batch_size, num_workers=args.threads,
                               order="random", pipelines={
                                   "image": [RandomResizedCrop(224), RandomHorizontalFlip(),
                                             ToTensor(), ToDevice("cuda"), ToTorchImage(),
                                             Normalize(dtype=dtype)],
                                   "label": [IntDecoder(), ToTensor(), Squeeze(),
                                             ToDevice("cuda")]})

    results = {}
    ld = loader()
    next(iter(ld))
    slots = ld._slots.buffers[0][0]
    pinned = torch.from_numpy(slots).is_pinned()
    results["ring slots pinned"] = pinned

    # Images/s of the pipeline alone.
    started, count = time.perf_counter(), 0
    for images, labels in ld:
        count += len(labels)
    torch.cuda.synchronize()
    loader_rate = count / (time.perf_counter() - started)
    results["train pipeline img/s"] = round(loader_rate)
    results["img/s per core"] = round(loader_rate / args.threads)

    # Overlap: matmuls alone, then matmuls while consuming batches.
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)

    def matmuls(n):
        for _ in range(n):
            a @ a
    matmuls(5)
    torch.cuda.synchronize()
    t = time.perf_counter()
    matmuls(200)
    torch.cuda.synchronize()
    alone = time.perf_counter() - t
    t = time.perf_counter()
    steps = 0
    for images, labels in ld:
        matmuls(200 // len(ld) + 1)
        steps += 1
    torch.cuda.synchronize()
    together = time.perf_counter() - t
    expected = max(alone * (200 // len(ld) + 1) * steps / 200, count / loader_rate)
    results["matmul-only s"] = round(alone, 3)
    results["matmul+loader s"] = round(together, 3)
    results["overlap: together / max(parts)"] = round(together / expected, 2)

    # bf16 normalisation on the GPU vs the CPU reference.
    cpu = fastdata.Loader(path, batch_size=64, pipelines={
        "image": [RandomResizedCrop(224), ToTensor(), ToTorchImage(), Normalize()],
        "label": None})
    gpu = fastdata.Loader(path, batch_size=64, pipelines={
        "image": [RandomResizedCrop(224), ToTensor(), ToDevice("cuda"), ToTorchImage(),
                  Normalize(dtype=torch.bfloat16)], "label": None})
    (x_cpu,), (x_gpu,) = next(iter(cpu)), next(iter(gpu))
    err = (x_gpu.float().cpu() - x_cpu).abs().max().item()
    results["bf16 normalise max abs error"] = round(err, 4)
    results["bf16 ok"] = err < 0.05

    for key, value in results.items():
        print(f"{key:40s} {value}")
    return 0 if pinned and results["bf16 ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
