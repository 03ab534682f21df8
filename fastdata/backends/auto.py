"""backend="auto": on a machine with a GPU, split each batch's decoding between the CPU threads
and the GPU; without one, the CPU backend.

``HybridBackend`` cuts each batch into one GPU task, the first ``g`` positions (one batched
decode by the GPU backend), and tasks of ``cpu.task_size`` positions for the rest, which the
loader's other worker threads decode with the CPU kernel.  Every position is decoded once, by
one side.  After each batch the share ``g / n`` moves toward the split at which both sides
finish together: each side's rate is measured on the batch (the GPU task's samples over its
duration; the CPU tasks' samples over the time from the first CPU task's start to the last
one's end), the target share is ``gpu_rate / (gpu_rate + cpu_rate)``, and the share moves a
third of the way there (``ADAPT``), within [``MIN_SHARE``, 1].  The side that waited gets more
work next time (DALI's ``hw_decoder_load`` is the same idea for its hardware decoder).

The outputs live where the GPU backend puts them.  With device outputs, the CPU tasks decode into
a page-locked host copy of the ring slot and copy their rows to the device on a stream of their
own, waited on before the task ends.  CutMix is not pasted while decoding here (the two sides
write different memories): Mixup cuts and pastes the decoded batch instead, with the same draws.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Optional

import numpy as np

from ..ops.base import host_array
from ..ops.crops import CropParams
from .base import ImageBackend
from .cpu import CPUBackend

#: Smallest GPU share: the GPU keeps a task, so its rate stays measured.
MIN_SHARE = 0.05
#: How far the share moves toward each batch's measured split.
ADAPT = 1 / 3


class HybridBackend(ImageBackend):
    """Decodes each batch partly with ``cpu`` (a CPUBackend) and partly with ``gpu`` (a batched
    backend: NvImageCodecBackend or DaliBackend), the GPU share starting at ``share`` and
    adapting (see the module docstring).  ``shares`` records the share each batch used."""

    name = "auto"
    supports_paste = False

    def __init__(self, cpu: CPUBackend, gpu: ImageBackend, share: float = 0.5):
        if not 0.0 < share <= 1.0:
            raise ValueError(f"share must be in (0, 1], got {share}")
        self.cpu, self.gpu = cpu, gpu
        self.device = gpu.device
        self.task_size = cpu.task_size
        self.share = float(share)
        self.shares: list[float] = []
        self._lock = threading.Lock()
        self._batches: dict[int, dict] = {}
        self._staging: dict[int, tuple] = {}

    def __repr__(self) -> str:
        return f"HybridBackend(cpu={self.cpu!r}, gpu={self.gpu!r}, share={self.share:.2f})"

    def bind(self, images, output_sizes, batch_size) -> None:
        super().bind(images, output_sizes, batch_size)
        self.cpu.bind(images, output_sizes, batch_size)
        self.gpu.bind(images, output_sizes, batch_size)

    def unbind(self) -> None:
        super().unbind()
        self.cpu.unbind()
        self.gpu.unbind()
        self._staging = {}

    def allocate(self, batch_size: int, ring_size: int, pin: bool) -> list[tuple]:
        slots = self.gpu.allocate(batch_size, ring_size, pin)
        self._staging = {}
        if self.device != "cpu":
            for slot in slots:       # the CPU side's host copy of each device slot
                self._staging[slot[0].data_ptr()] = tuple(
                    host_array(tuple(out.shape), np.uint8, True) for out in slot)
        return slots

    def gpu_count(self, n: int) -> int:
        """Positions the GPU takes in a batch of n (at least one)."""
        return min(n, max(1, int(round(self.share * n)))) if n else 0

    def task_ranges(self, n: int) -> list[tuple[int, int]]:
        g = self.gpu_count(n)
        with self._lock:
            self.shares.append(g / n if n else 0.0)
        step = max(1, int(self.cpu.task_size))
        return ([(0, g)] if g else []) + [(s, min(s + step, n)) for s in range(g, n, step)]

    def make_worker_state(self) -> dict:
        return {"cpu": None, "gpu": None, "stream": None}

    def release_worker_state(self, state: dict) -> None:
        if state["cpu"] is not None:
            self.cpu.release_worker_state(state["cpu"])
        if state["gpu"] is not None:
            self.gpu.release_worker_state(state["gpu"])

    def decode_range(self, crops: CropParams, indices: np.ndarray, start: int, stop: int,
                     outs: tuple, state: dict,
                     describe: Optional[Callable[[int], str]] = None) -> None:
        began = time.perf_counter()
        on_gpu = start == 0            # task_ranges gives the GPU the range starting at 0
        if on_gpu:
            if state["gpu"] is None:
                state["gpu"] = self.gpu.make_worker_state()
            self.gpu.decode_range(crops, indices, start, stop, outs, state["gpu"], describe)
        else:
            if state["cpu"] is None:
                state["cpu"] = self.cpu.make_worker_state()
            self._decode_cpu(crops, indices, start, stop, outs, state, describe)
        self._account(crops, indices, start, stop, on_gpu, began, time.perf_counter())

    def _decode_cpu(self, crops, indices, start, stop, outs, state, describe) -> None:
        staging = self._staging.get(outs[0].data_ptr()) if self.device != "cpu" else None
        if staging is None:
            self.cpu.decode_range(crops, indices, start, stop, outs, state["cpu"], describe)
            return
        import torch
        self.cpu.decode_range(crops, indices, start, stop, staging, state["cpu"], describe)
        if state["stream"] is None:
            state["stream"] = torch.cuda.Stream(self.device)
        with torch.cuda.stream(state["stream"]):
            for host, out in zip(staging, outs):     # positions start:stop: no paste plan
                out[start:stop].copy_(torch.from_numpy(host[start:stop]), non_blocking=True)
        state["stream"].synchronize()

    def _account(self, crops: CropParams, indices: np.ndarray, start: int, stop: int,
                 on_gpu: bool, began: float, ended: float) -> None:
        """Note a finished task; once its batch is complete, move the share."""
        n = len(indices)
        with self._lock:
            batch = self._batches.setdefault(id(crops), {
                "done": 0, "gpu": 0, "gpu_time": 0.0, "cpu_first": None, "cpu_last": None})
            batch["done"] += stop - start
            if on_gpu:
                batch["gpu"], batch["gpu_time"] = stop - start, ended - began
            else:
                first = batch["cpu_first"]
                batch["cpu_first"] = began if first is None else min(first, began)
                batch["cpu_last"] = ended if batch["cpu_last"] is None else \
                    max(batch["cpu_last"], ended)
            if batch["done"] < n:
                return
            del self._batches[id(crops)]
            if batch["cpu_first"] is None or batch["gpu_time"] <= 0:
                if batch["cpu_first"] is None and batch["gpu"] == n:
                    # the GPU did it all: offer the CPU a share again
                    self.share = max(MIN_SHARE, self.share * (1 - ADAPT))
                return
            gpu_rate = batch["gpu"] / batch["gpu_time"]
            cpu_rate = (n - batch["gpu"]) / max(batch["cpu_last"] - batch["cpu_first"], 1e-9)
            target = gpu_rate / (gpu_rate + cpu_rate)
            self.share = min(1.0, max(MIN_SHARE, self.share + ADAPT * (target - self.share)))


def gpu_backend(use_libturbojpeg: bool = True,
                accept_jpeg_warnings: bool = False) -> Optional[ImageBackend]:
    """The GPU backend "auto" pairs with the CPU: nvImageCodec where installed, else DALI on
    the GPU, else None (also without a CUDA device)."""
    from .dali import cuda_available
    if not cuda_available():
        return None
    try:
        from .nvimgcodec import NvImageCodecBackend
        return NvImageCodecBackend(use_libturbojpeg, accept_jpeg_warnings)
    except ImportError:
        pass
    try:
        from .dali import DaliBackend
        return DaliBackend(use_libturbojpeg, accept_jpeg_warnings, device="gpu")
    except ImportError:
        return None


def auto_backend(use_libturbojpeg: bool = True, accept_jpeg_warnings: bool = False,
                 share: float = 0.5) -> ImageBackend:
    """backend="auto": a HybridBackend of the CPU backend and ``gpu_backend()`` where there is
    a GPU backend to pair with, else the CPU backend."""
    cpu = CPUBackend(use_libturbojpeg, accept_jpeg_warnings)
    gpu = gpu_backend(use_libturbojpeg, accept_jpeg_warnings)
    return cpu if gpu is None else HybridBackend(cpu, gpu, share)


__all__ = ["HybridBackend", "auto_backend", "gpu_backend", "MIN_SHARE", "ADAPT"]
