"""The DALI backend ("dali"): an NVIDIA DALI pipeline fed with the record bytes and the crops
our sampler drew, so the boxes, flips, CutMix pastes, order and resume state are the CPU path's.

Per batch range, for each sample (``base.region_plan``):

1. a JPEG record is decoded over its region only (``fn.decoders.image_slice`` with per-sample
   anchor and shape; ``device="mixed"``, nvJPEG and the GPU's hardware decoder, on a GPU;
   DALI's libjpeg-turbo CPU decoder with ``device_id=None`` without one), always at full scale
   (DALI has no DCT scaling); a raw record's region is cut from the file and fed through a
   second ``external_source`` (moved to the GPU by DALI on a GPU), so the same resize follows;
2. each view's read area is cut from the region (``fn.slice``: DALI's filter would read the
   pixels around the box, the CPU path's crop ops do not) and resized
   to its output size by ``fn.resize`` with ``antialias=True`` and linear interpolation over the
   fractional box (``roi_start``/``roi_end``), read right to left for a mirrored view;
3. the outputs are copied into the backend's ring slot, following the CutMix paste plan.

Outputs differ from the CPU backend only by resampling (DALI's filter, full-scale decoding vs
the CPU path's DCT scaling); the README gives the measured difference.

Checks DALI does not make are made first, with the CPU path's messages (``base.jpeg_problem``:
truncated records, zeroed quantisation tables, a header size that is not the record's).  A
record DALI cannot decode fails the whole run; each sample of the range is then decoded alone
to name it in the ``SampleError``.  Unlike the CPU backend, JPEG data that libjpeg decodes only
with a warning is decoded as best DALI can (as ``accept_jpeg_warnings=True``): DALI does not
report warnings.

Memory: on the CPU, one pipeline per loader worker thread (``num_threads=1``: the loader's
threads are the parallelism) of at most ``task_size`` samples.  On a GPU, one pipeline shared by
the worker threads (a lock; one batch at a time), of the loader's batch size; its nvJPEG pools
are padded to the largest stored JPEG (``device_memory_padding`` and ``host_memory_padding`` =
width x height x 3 bytes of the largest JPEG, at least 1 MiB, so they do not grow mid-epoch; the
hardware decoder preallocates for the largest width and height), and the outputs
are copied from DALI's buffers into a fixed ring of device slots allocated once.
"""
from __future__ import annotations

import re
import threading
from typing import Any, Callable, Optional

import numpy as np

from ..fields.rgb_image import MODE_JPG
from ..ops.crops import CropParams
from ..pixels import jpeg
from ..reader import SampleError
from .base import (ImageBackend, RegionPlan, checked_part, device_slots, missing_extra,
                   region_plan, write_outputs)

DEVICES = ("auto", "cpu", "gpu")


def _import_dali():
    try:
        import nvidia.dali as dali
        from nvidia.dali import fn, types
    except ImportError:
        raise missing_extra("dali", "dali", "NVIDIA DALI (nvidia-dali-cuda120 or -cuda130)") \
            from None
    return dali, fn, types


def cuda_available() -> bool:
    """Whether torch sees a CUDA device (False without torch)."""
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _reason(err: Exception) -> str:
    """The informative line of a DALI error (what follows "encountered:"; DALI prints the
    codec's own message to stderr only)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if "encountered:" in lines and lines.index("encountered:") + 1 < len(lines):
        line = lines[lines.index("encountered:") + 1].rstrip(" :")
        return re.sub(r"sample #\d+", "the record", line)     # its number in a 1-sample run
    lines = [line for line in lines if not line.startswith("Critical error")] or lines
    return lines[0] if lines else type(err).__name__


class DaliBackend(ImageBackend):
    """Decodes crops with an NVIDIA DALI pipeline (see the module docstring).

    device: "gpu" (outputs in device memory, ``cuda:device_id``), "cpu" (DALI's CPU operators,
    ``device_id=None``: host outputs, testable without a GPU), or "auto" (default): "gpu" where
    torch sees a CUDA device, else "cpu".
    task_size: samples per worker task in CPU mode (each worker thread runs its own pipeline);
    on a GPU one task decodes the whole batch.
    num_threads: DALI's CPU threads for the GPU pipeline (parsing, Huffman decoding of what the
    hardware decoder does not take); default 4.
    hw_decoder_load: the share of JPEGs DALI sends to the GPU's hardware decoder (DALI's own
    default, 0.65).
    accept_jpeg_warnings: False (default) makes the CPU path's checks before decoding (see the
    module docstring); True skips the two that only ``accept_jpeg_warnings=False`` makes there.
    use_libturbojpeg: accepted for the ops' common options; DALI uses its own decoders."""

    name = "dali"

    def __init__(self, use_libturbojpeg: bool = True, accept_jpeg_warnings: bool = False,
                 device: str = "auto", device_id: int = 0, task_size: int = 16,
                 num_threads: int = 4, hw_decoder_load: float = 0.65):
        _import_dali()
        if device not in DEVICES:
            raise ValueError(f"DaliBackend device must be one of {DEVICES}, got {device!r}")
        if device == "auto":
            device = "gpu" if cuda_available() else "cpu"
        elif device == "gpu" and not cuda_available():
            raise RuntimeError("DaliBackend(device='gpu') needs a CUDA device; none is visible "
                               "to torch (device='cpu' runs DALI's CPU operators)")
        if task_size < 1 or num_threads < 1:
            raise ValueError(f"task_size and num_threads must be >= 1, got {task_size}, "
                             f"{num_threads}")
        self.mode = device
        self.device_id = int(device_id)
        self.device = f"cuda:{self.device_id}" if device == "gpu" else "cpu"
        self.task_size = int(task_size)
        self.num_threads = int(num_threads)
        self.hw_decoder_load = float(hw_decoder_load)
        self.accept_jpeg_warnings = bool(accept_jpeg_warnings)
        self._generation = 0          # bumped by bind: pipelines of older bindings are rebuilt
        self._shared: Optional[dict] = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"DaliBackend(device={self.mode!r}, task_size={self.task_size}, "
                f"accept_jpeg_warnings={self.accept_jpeg_warnings})")

    @property
    def on_gpu(self) -> bool:
        return self.mode == "gpu"

    # -- binding and memory --------------------------------------------------------------------
    def bind(self, images, output_sizes, batch_size) -> None:
        super().bind(images, output_sizes, batch_size)
        self._generation += 1
        self._shared = None

    def unbind(self) -> None:
        super().unbind()
        self._shared = None

    def task_ranges(self, n: int) -> list[tuple[int, int]]:
        return [(0, n)] if self.on_gpu and n else super().task_ranges(n)

    def allocate(self, batch_size: int, ring_size: int, pin: bool) -> list[tuple]:
        if not self.on_gpu:
            return super().allocate(batch_size, ring_size, pin)
        return device_slots(self.output_sizes, batch_size, ring_size, self.device)

    def make_worker_state(self) -> dict:
        if self.on_gpu:
            with self._lock:
                if self._shared is None:
                    import torch
                    self._shared = {"pipes": {}, "generation": self._generation,
                                    "stream": torch.cuda.Stream(self.device)}
            return self._shared
        return {"pipes": {}, "generation": self._generation}

    def release_worker_state(self, state: dict) -> None:
        state["pipes"].clear()

    # -- pipelines -----------------------------------------------------------------------------
    def _pipeline(self, state: dict, kind: str) -> Any:
        """This state's pipeline for "jpeg" or "raw" records, built on first use (again after
        the backend is bound to new output sizes)."""
        if state["generation"] != self._generation:
            state["pipes"].clear()
            state["generation"] = self._generation
        pipe = state["pipes"].get(kind)
        if pipe is None:
            pipe = state["pipes"][kind] = self._build(kind)
        return pipe

    @property
    def max_batch(self) -> int:
        return max(1, self.batch_size) if self.on_gpu else self.task_size

    def _build(self, kind: str) -> Any:
        dali, fn, types = _import_dali()
        gpu = self.on_gpu
        pipe = dali.Pipeline(batch_size=self.max_batch,
                             num_threads=self.num_threads if gpu else 1,
                             device_id=self.device_id if gpu else None,
                             prefetch_queue_depth=1, exec_dynamic=True, seed=0)
        with pipe:
            if kind == "jpeg":
                data = fn.external_source(name="data", dtype=types.UINT8, ndim=1)
                anchor = fn.external_source(name="anchor", dtype=types.INT32, ndim=1)
                shape = fn.external_source(name="shape", dtype=types.INT32, ndim=1)
                options = {}
                if gpu:
                    images = self.images
                    jpegs = images.modes == MODE_JPG
                    pool = max(images.max_jpeg_pixels * 3, 1 << 20)
                    options = dict(hw_decoder_load=self.hw_decoder_load,
                                   device_memory_padding=pool, host_memory_padding=pool,
                                   preallocate_width_hint=int(images.widths[jpegs].max(
                                       initial=0)),
                                   preallocate_height_hint=int(images.heights[jpegs].max(
                                       initial=0)))
                image = fn.decoders.image_slice(data, anchor, shape, axis_names="HW",
                                                device="mixed" if gpu else "cpu",
                                                output_type=types.RGB,
                                                adjust_orientation=False, **options)
            else:
                image = fn.external_source(name="data", dtype=types.UINT8, ndim=3,
                                           layout="HWC")
                if gpu:
                    image = image.gpu()
            outputs = []
            for v, (height, width) in enumerate(self.output_sizes):
                # DALI's filter reads the input around the box: cut each view's read area.
                slice_anchor = fn.external_source(name=f"slice_anchor{v}", dtype=types.INT32,
                                                  ndim=1)
                slice_shape = fn.external_source(name=f"slice_shape{v}", dtype=types.INT32,
                                                 ndim=1)
                source = fn.slice(image, slice_anchor, slice_shape, axis_names="HW")
                roi_start = fn.external_source(name=f"roi_start{v}", dtype=types.FLOAT, ndim=1)
                roi_end = fn.external_source(name=f"roi_end{v}", dtype=types.FLOAT, ndim=1)
                outputs.append(fn.resize(source, size=[height, width], roi_start=roi_start,
                                         roi_end=roi_end, roi_relative=False, antialias=True,
                                         interp_type=types.INTERP_LINEAR, dtype=types.UINT8))
            pipe.set_outputs(*outputs)
        pipe.build()
        return pipe

    def _feed(self, pipe: Any, kind: str, indices: np.ndarray, plan: RegionPlan) -> None:
        images = self.images
        regions = plan.regions
        if kind == "jpeg":
            pipe.feed_input("data", [images.payload(int(i)) for i in indices])
            pipe.feed_input("anchor", regions[:, :2].astype(np.int32))
            pipe.feed_input("shape", regions[:, 2:].astype(np.int32))
        else:
            cut = []
            for i, (top, left, height, width) in zip(indices, regions):
                stored = images.payload(int(i)).reshape(int(images.heights[i]),
                                                        int(images.widths[i]), 3)
                cut.append(np.ascontiguousarray(stored[top:top + height, left:left + width]))
            pipe.feed_input("data", cut)
        for v in range(len(self.output_sizes)):
            pipe.feed_input(f"slice_anchor{v}", plan.slices[v, :, :2].astype(np.int32))
            pipe.feed_input(f"slice_shape{v}", plan.slices[v, :, 2:].astype(np.int32))
            pipe.feed_input(f"roi_start{v}", plan.rois[v, :, :2].astype(np.float32))
            pipe.feed_input(f"roi_end{v}", plan.rois[v, :, 2:].astype(np.float32))

    def _run(self, state: dict, kind: str, indices: np.ndarray, plan: RegionPlan) -> tuple:
        pipe = self._pipeline(state, kind)
        self._feed(pipe, kind, indices, plan)
        return pipe.run()

    # -- decoding ------------------------------------------------------------------------------
    def decode_range(self, crops: CropParams, indices: np.ndarray, start: int, stop: int,
                     outs: tuple, state: dict,
                     describe: Optional[Callable[[int], str]] = None) -> None:
        positions, samples, is_jpeg = checked_part(
            self.images, crops, indices, start, stop, not self.accept_jpeg_warnings,
            lambda k, index, problem: self._error(k, index, problem, describe))
        if not len(positions):
            return
        plan = region_plan(crops, positions)
        if self.on_gpu:
            with self._lock:
                self._decode_kinds(crops, positions, samples, is_jpeg, plan, outs, state,
                                   describe)
        else:
            self._decode_kinds(crops, positions, samples, is_jpeg, plan, outs, state, describe)

    def _decode_kinds(self, crops, positions, samples, is_jpeg, plan, outs, state,
                      describe) -> None:
        step = self.max_batch
        for kind, chosen in (("jpeg", is_jpeg), ("raw", ~is_jpeg)):
            where = np.flatnonzero(chosen)
            for s in range(0, len(where), step):
                part = where[s:s + step]
                sub = RegionPlan(plan.regions[part], plan.slices[:, part], plan.rois[:, part])
                self._decode_part(crops, kind, positions[part], samples[part], sub, outs,
                                  state, describe)

    def _decode_part(self, crops: CropParams, kind: str, positions: np.ndarray,
                     samples: np.ndarray, plan: RegionPlan, outs: tuple, state: dict,
                     describe) -> None:
        try:
            results = self._run(state, kind, samples, plan)
        except Exception:
            self._blame(state, kind, positions, samples, plan, describe)
            raise
        if self.on_gpu:
            self._write_gpu(results, positions, outs, crops, state["stream"])
        else:
            for v, (result, out) in enumerate(zip(results, outs)):
                write_outputs(result.as_array(), positions, out, crops.paste, v)

    def _write_gpu(self, results: tuple, positions: np.ndarray, outs: tuple,
                   crops: CropParams, stream: Any) -> None:
        """Copy DALI's device outputs into the ring slots on the backend's stream (DALI reuses
        its buffers on the next run), then wait for it: the batch ops read the slots next."""
        import torch
        from nvidia.dali.plugin.pytorch import feed_ndarray
        with torch.cuda.stream(stream):
            for v, (result, out) in enumerate(zip(results, outs)):
                dense = result.as_tensor()
                first = int(positions[0])
                contiguous = np.array_equal(positions, np.arange(first, first + len(positions)))
                if contiguous and not (v == 0 and crops.paste.active):
                    feed_ndarray(dense, out[first:first + len(positions)],
                                 cuda_stream=stream.cuda_stream)
                    continue
                staging = torch.empty((len(positions), *out.shape[1:]), dtype=torch.uint8,
                                      device=out.device)
                feed_ndarray(dense, staging, cuda_stream=stream.cuda_stream)
                write_outputs(staging, positions, out, crops.paste, v)
        stream.synchronize()

    def _blame(self, state: dict, kind: str, positions: np.ndarray, samples: np.ndarray,
               plan: RegionPlan, describe) -> None:
        """DALI failed a run: decode each sample alone, in a new pipeline (a pipeline that
        raised is not reused), to raise a SampleError naming the first that fails."""
        state["pipes"].pop(kind, None)
        for m in range(len(positions)):
            one = RegionPlan(plan.regions[m:m + 1], plan.slices[:, m:m + 1],
                             plan.rois[:, m:m + 1])
            try:
                self._run(state, kind, samples[m:m + 1], one)
            except Exception as single:
                state["pipes"].pop(kind, None)
                index = int(samples[m])
                reason = f"DALI: {_reason(single)}"
                if kind == "jpeg":
                    try:       # libjpeg's own words, which DALI only prints
                        jpeg.decode_record(self.images.payload(index), accept_warnings=True)
                    except jpeg.JpegError as codec:
                        reason += f" (libjpeg: {codec})"
                raise self._error(int(positions[m]), index, reason, describe, kind) from None

    def _error(self, k: int, index: int, reason: str,
               describe: Optional[Callable[[int], str]], kind: str = "jpeg") -> SampleError:
        role = describe(k) if describe is not None else ""
        what = "decode JPEG" if kind == "jpeg" else "resize raw image"
        return SampleError(index, self.images.name, f"cannot {what}{role}: {reason}")


__all__ = ["DaliBackend"]
