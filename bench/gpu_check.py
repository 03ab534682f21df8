"""GPU checks of the loader and its image backends, in one run on a machine with a CUDA device
(prepared for the lent GPU machine: one H200, 16 cores, Python 3.12, torch with CUDA 13, no
network).  Without a CUDA device it says so and exits 0; ``--cpu-smoke`` runs every part that
can run on the CPU, on a tiny set, to check the script itself.

1. setup: installs nvImageCodec from local wheels where it is not importable (``--wheels DIR``
   or ``FASTDATA_GPU_WHEELS``: e.g. nvidia_nvimgcodec_cu13-*.whl and nvidia_nvjpeg-*.whl, with
   ``pip install --no-index --no-deps`` into a folder put on sys.path), then runs the GPU
   backends' tests (tests/test_nvimgcodec_backend.py, test_hybrid_backend.py,
   test_dali_backend.py; ``--no-tests`` skips them);
2. basics: the ring slots that feed ToDevice are page-locked; a matmul stream taking batches is
   slowed no more than the loader's own CPU work explains; bf16 normalisation on the GPU matches
   the CPU reference;
3. throughput: img/s of RandomResizedCrop + flip -> uint8 on the GPU -> bf16 normalise, for the
   CPU backend with all cores, nvimgcodec, dali (where DALI is importable) and auto (the hybrid
   split, with its final GPU share), at 224 and 160, batches of 256, on an ImageNet-like set the
   script makes (``--images``, proportion mode, max_resolution 500 as FFCV's ResNet-50 recipe);
4. memory: device memory in use (the whole device: torch's and the decoders' own allocations,
   from cudaMemGetInfo) after epochs 1, 2, 5, 10 and 20 of each GPU backend over the first 1,024
   images, which must stay flat (within 64 MiB from epoch 2 to 20);
5. training: a ResNet-50 bf16 channels_last SGD step at 224 fed by each backend's loader running
   beside it, as a share of the same step on a synthetic batch already on the GPU.

    python bench/gpu_check.py [--wheels DIR] [--threads 16] [--images 4000]
    python bench/gpu_check.py --cpu-smoke
"""
from __future__ import annotations

import argparse
import glob
import importlib
import os
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


# -- setup --------------------------------------------------------------------------------------
def install_wheels(folder: str, work: str) -> str:
    """pip install the wheels of ``folder`` (no index, no dependencies) into work/site, put it
    on sys.path; returns what happened."""
    wheels = sorted(glob.glob(os.path.join(folder, "*.whl")))
    if not wheels:
        return f"no wheels in {folder}"
    target = os.path.join(work, "site")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index",
                           "--no-deps", "--target", target, *wheels], capture_output=True,
                          text=True)
    if done.returncode:
        return f"pip failed: {done.stderr.strip().splitlines()[-1:]}"
    sys.path.insert(0, target)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [target,
                                                             os.environ.get("PYTHONPATH")]))
    importlib.invalidate_caches()
    if "nvidia" in sys.modules:       # a namespace package seen before the install
        sys.modules["nvidia"].__path__.append(os.path.join(target, "nvidia"))
    return f"installed {', '.join(os.path.basename(w) for w in wheels)}"


def importable(module: str) -> bool:
    try:
        importlib.import_module(module)
        return True
    except ImportError:
        return False


def run_tests(smoke: bool) -> str:
    files = ["tests/test_nvimgcodec_backend.py", "tests/test_hybrid_backend.py",
             "tests/test_dali_backend.py"]
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", *files], cwd=ROOT,
                          capture_output=True, text=True, timeout=120 if smoke else 300)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    print("\n".join(lines[-12:]))
    return lines[-1] if lines else f"pytest exited {done.returncode}"


# -- data ---------------------------------------------------------------------------------------
def _make_part(root: str, per_class: int, seed: int) -> str:
    from fastdata.demo import make_imagenet_like
    return make_imagenet_like(root, classes=20, per_class=per_class, val_per_class=0, seed=seed)


def make_data(work: str, images: int, max_resolution: int, threads: int) -> str:
    """An ImageNet-like folder (fastdata.demo's synthetic photos, ImageNet's sizes and JPEG
    qualities; made in ``threads`` processes) written to a .beton."""
    from concurrent.futures import ProcessPoolExecutor

    import fastdata
    from fastdata.writers import write_imagenet
    parts = max(1, min(threads, images // 20))
    per_class = max(1, images // (20 * parts))
    with ProcessPoolExecutor(parts) as pool:
        roots = list(pool.map(_make_part, [os.path.join(work, f"part{p}") for p in range(parts)],
                              [per_class] * parts, range(parts)))
    folder = os.path.join(work, "inet", "train")
    for p, root in enumerate(roots):                 # one folder: class c of every part
        for name in os.listdir(os.path.join(root, "train")):
            os.makedirs(os.path.join(folder, name), exist_ok=True)
            for file in os.listdir(os.path.join(root, "train", name)):
                os.rename(os.path.join(root, "train", name, file),
                          os.path.join(folder, name, f"p{p}_{file}"))
    path = os.path.join(work, "train.beton")
    write_imagenet(os.path.dirname(folder), path, image_field=fastdata.RGBImageField(
        write_mode="proportion", max_resolution=max_resolution), progress=False)
    return path


def loader(path: str, backend, size: int, threads: int, batch_size: int, device: str,
           indices=None):
    import fastdata
    from fastdata.ops import (IntDecoder, Normalize, RandomHorizontalFlip, RandomResizedCrop,
                              Squeeze, ToDevice, ToTensor, ToTorchImage)
    dtype = torch.bfloat16 if device != "cpu" else torch.float32
    return fastdata.Loader(path, batch_size=batch_size, num_workers=threads, order="random",
                           drop_last=True, indices=indices, pipelines={
                               "image": [RandomResizedCrop(size, backend=backend),
                                         RandomHorizontalFlip(), ToTensor(), ToDevice(device),
                                         ToTorchImage(), Normalize(dtype=dtype)],
                               "label": [IntDecoder(), ToTensor(), Squeeze(), ToDevice(device)]})


def sync(device: str) -> None:
    if device != "cpu":
        torch.cuda.synchronize()


def backends(device: str, smoke: bool) -> dict:
    """name -> what the ops take in backend=, for the backends this machine can run."""
    from fastdata.backends.auto import HybridBackend
    out = {"cpu": "cpu"}
    gpu = device != "cpu"
    if importable("nvidia.nvimgcodec"):
        from fastdata.backends.nvimgcodec import NvImageCodecBackend
        out["nvimgcodec"] = lambda: NvImageCodecBackend(device="gpu" if gpu else "cpu")
    if importable("nvidia.dali"):
        from fastdata.backends.dali import DaliBackend
        out["dali"] = lambda: DaliBackend(device="gpu" if gpu else "cpu")
    out["auto"] = "auto"
    if smoke and "nvimgcodec" in out:       # the hybrid's bookkeeping, with the CPU-mode side
        from fastdata.backends.cpu import CPUBackend
        out["auto"] = lambda: HybridBackend(CPUBackend(), out["nvimgcodec"]())
    return out


def make(spec):
    return spec() if callable(spec) else spec


# -- 2. basics ----------------------------------------------------------------------------------
def basics(path: str, threads: int, batch_size: int) -> dict:
    import fastdata
    from fastdata.ops import (Normalize, RandomResizedCrop, ToDevice, ToTensor, ToTorchImage)
    results = {}
    ld = loader(path, "cpu", 224, threads, batch_size, "cuda")
    next(iter(ld))
    slots = ld._slots.buffers[0][0]
    results["ring slots pinned"] = torch.from_numpy(slots).is_pinned()
    started, count = time.perf_counter(), 0
    for images, labels in ld:
        count += len(labels)
    torch.cuda.synchronize()
    loader_rate = count / (time.perf_counter() - started)
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
    results["overlap: together / max(parts)"] = round(together / expected, 2)
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
    return results


# -- 3. throughput ------------------------------------------------------------------------------
def throughput(path, specs, sizes, threads, batch_size, device, epochs) -> list[tuple]:
    rows = []
    for name, spec in specs.items():
        for size in sizes:
            backend = make(spec)
            ld = loader(path, backend, size, threads, batch_size, device)
            for _ in ld:                                 # warm-up epoch
                pass
            sync(device)
            count, started = 0, time.perf_counter()
            for _ in range(epochs):
                for images, labels in ld:
                    count += len(labels)
            sync(device)
            rate = count / (time.perf_counter() - started)
            share = getattr(ld.pipelines[0].decoder.backend, "share", None)
            rows.append((name, size, round(rate), round(rate / threads),
                         "" if share is None else f"{share:.2f}"))
            ld.close()
    return rows


# -- 4. memory ----------------------------------------------------------------------------------
def device_used_mib() -> float:
    free, total = torch.cuda.mem_get_info()
    return (total - free) / 2 ** 20


def memory(path, specs, threads, batch_size, images, epochs=20) -> list[tuple]:
    """Device memory over 20 epochs of the first ``images`` samples, per GPU backend."""
    rows = []
    marks = {1, 2, 5, 10, 20, epochs}
    for name, spec in specs.items():
        if name == "cpu":
            continue
        ld = loader(path, make(spec), 224, threads, batch_size, "cuda", range(images))
        seen = {}
        for epoch in range(1, epochs + 1):
            for _ in ld:
                pass
            torch.cuda.synchronize()
            if epoch in marks:
                seen[epoch] = round(device_used_mib())
        ld.close()
        growth = seen[max(seen)] - seen[2] if 2 in seen else 0
        rows.append((name, *(seen.get(e, "") for e in sorted(marks)), growth))
    return rows


# -- 5. training --------------------------------------------------------------------------------
def train_rates(path, specs, threads, batch_size, device, steps, smoke) -> list[tuple]:
    import torchvision
    model = (torchvision.models.resnet18 if smoke else torchvision.models.resnet50)()
    model = model.to(device, memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    size = 64 if smoke else 224
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(x, y):
        with torch.autocast(device_type="cuda" if device != "cpu" else "cpu",
                            dtype=torch.bfloat16):
            loss = loss_fn(model(x.contiguous(memory_format=torch.channels_last)), y % 1000)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    x = torch.randn(batch_size, 3, size, size, device=device).to(
        memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch_size,), device=device)
    for _ in range(3):
        step(x, y)
    sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        step(x, y)
    sync(device)
    synthetic = steps * batch_size / (time.perf_counter() - started)
    rows = [("synthetic input", round(synthetic), "100%")]
    for name, spec in specs.items():
        ld = loader(path, make(spec), size, threads, batch_size, device)
        batches = iter(())
        done, started = -3, None
        while done < steps:
            try:
                images, labels = next(batches)
            except StopIteration:
                batches = iter(ld)
                continue
            step(images, labels)
            done += 1
            if done == 0:
                sync(device)
                started = time.perf_counter()
        sync(device)
        rate = steps * batch_size / (time.perf_counter() - started)
        rows.append((f"loader: {name}", round(rate), f"{100 * rate / synthetic:.0f}%"))
        ld.close()
    return rows


def table(title: str, header: tuple, rows: list[tuple]) -> None:
    print(f"\n{title}")
    widths = [max(len(str(v)) for v in col) + 2 for col in zip(header, *rows)]
    for row in (header, *rows):
        print("".join(str(v).rjust(w) if i else str(v).ljust(w)
                      for i, (v, w) in enumerate(zip(row, widths))))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels", default=os.environ.get("FASTDATA_GPU_WHEELS"),
                        help="folder of wheels to install first (nvImageCodec, nvJPEG)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per throughput row")
    parser.add_argument("--train-steps", type=int, default=30)
    parser.add_argument("--no-tests", action="store_true")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="no GPU: run the CPU-runnable parts on a tiny set")
    args = parser.parse_args()
    smoke = args.cpu_smoke
    if not smoke and not torch.cuda.is_available():
        print("no CUDA device: nothing to check (--cpu-smoke checks the script on the CPU)")
        return 0
    if smoke:
        args.images, args.batch_size, args.epochs, args.train_steps = 120, 16, 1, 2
    work = tempfile.mkdtemp(prefix="fastdata-gpu-")
    device = "cpu" if smoke else "cuda"
    print(f"torch {torch.__version__}, device: "
          f"{torch.cuda.get_device_name() if device == 'cuda' else 'cpu (smoke run)'}, "
          f"{args.threads} threads")
    if args.wheels and not importable("nvidia.nvimgcodec"):
        print("wheels:", install_wheels(args.wheels, work))
    for module in ("nvidia.nvimgcodec", "nvidia.dali"):
        print(f"{module}: {'importable' if importable(module) else 'not installed'}")
    if not args.no_tests:
        print("tests:", run_tests(smoke))
    started = time.perf_counter()
    path = make_data(work, args.images, 500, args.threads)
    print(f"data: {args.images} images written in {time.perf_counter() - started:.0f} s")
    specs = backends(device, smoke)
    ok = True
    if device == "cuda":
        results = basics(path, args.threads, args.batch_size)
        for key, value in results.items():
            print(f"{key:40s} {value}")
        ok = bool(results["ring slots pinned"] and results["bf16 ok"])
    rows = throughput(path, specs, (224, 160), args.threads, args.batch_size, device,
                      args.epochs)
    table(f"throughput: RandomResizedCrop + flip -> {device} -> normalise, batches of "
          f"{args.batch_size}", ("backend", "size", "img/s", "img/s/core", "GPU share"), rows)
    if device == "cuda":
        mem = memory(path, specs, args.threads, args.batch_size, min(args.images, 1024))
        table("device memory in use (MiB) after epoch", ("backend", "1", "2", "5", "10", "20",
                                                         "growth 2->20"), mem)
        ok &= all(abs(row[-1]) <= 64 for row in mem)
    else:
        print("\nmemory: no CUDA device, skipped")
    rows = train_rates(path, specs, args.threads, args.batch_size, device, args.train_steps,
                       smoke)
    table(f"training step ({'ResNet-18 64px, smoke' if smoke else 'ResNet-50 224 bf16'} "
          f"channels_last): img/s", ("input", "img/s", "of synthetic"), rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
