"""The nvImageCodec backend ("nvimgcodec"): batched region decoding on the GPU, then the CPU
path's resize in torch on the device.

Per batch (one worker task; ``base.region_plan`` gives each sample's region):

1. the JPEG records go to one ``nvimgcodec.Decoder.decode`` call, each as a decode source with
   its region (nvImageCodec's ROI decoding: only the crop's rows and columns, plus a few pixels
   for chroma upsampling), on the GPU (nvJPEG; the hardware JPEG engine where the GPU has one)
   with libjpeg's fancy upsampling, on the backend's CUDA stream;
2. a raw record's region is cut from the file and copied to the device;
3. each view's read area is resized and flipped by ``resize_torch.resize_box`` (the CPU
   kernel's filter; float32 matrix products) and written into the ring slot, following the
   CutMix paste plan.  The decoded images reach torch with no copy (``__cuda_array_interface__``).

The backend waits for its stream before the batch ops run.  Outputs differ from the CPU backend
by the decoder (nvJPEG's IDCT and upsampling are not libjpeg-turbo's) and by the CPU path's DCT
scaling, not by the filter.

Memory: the outputs go to a fixed ring of device slots (``base.device_slots``) allocated once;
nvImageCodec decodes each batch into the previous batch's images (0.9 and later; their buffers
grow to the largest region each position has had, then stay) and the resize's temporaries come
from torch's caching allocator, which reuses its blocks from batch to batch (bench/gpu_check.py
measures device memory over 20 epochs).  ``device="cpu"`` runs the
same steps with nvImageCodec's CPU codecs into host slots (the tests' mode without a GPU).
"""
from __future__ import annotations

import threading
from contextlib import nullcontext
from typing import Any, Callable, Optional

import numpy as np

from ..ops.crops import CropParams
from ..reader import SampleError
from .base import (ImageBackend, checked_part, device_slots, missing_extra, region_plan,
                   write_outputs)
from .resize_torch import resize_box

PACKAGES = "nvImageCodec (nvidia-nvimgcodec-cu12 or -cu13) and torch with CUDA"


def _import_nvimgcodec():
    try:
        from nvidia import nvimgcodec
    except ImportError:
        raise missing_extra("nvimgcodec", "nvimgcodec", PACKAGES) from None
    return nvimgcodec


def decode_source(nvimgcodec: Any, data: np.ndarray, region: np.ndarray) -> Any:
    """nvImageCodec's decode source for ``data`` (the record's bytes) restricted to ``region``
    (top, left, height, width): ``DecodeSource(array, Region)`` (nvImageCodec 0.3-0.5), or
    a sub code stream with the region (0.6 and later)."""
    top, left, height, width = (int(v) for v in region)
    roi = nvimgcodec.Region(top, left, top + height, left + width)
    if hasattr(nvimgcodec, "DecodeSource"):
        return nvimgcodec.DecodeSource(data, roi)
    return nvimgcodec.CodeStream(data).get_sub_code_stream(region=roi)


class NvImageCodecBackend(ImageBackend):
    """Decodes crops with nvImageCodec (see the module docstring).

    device: "gpu" (default: device ``device_id``, outputs in device memory) or "cpu"
    (nvImageCodec's CPU codecs and host outputs, the same plumbing: what the tests run without a
    GPU, where nvImageCodec's CPU-only mode loads).  num_cpu_threads: nvImageCodec's host threads
    (parsing, Huffman decoding for nvJPEG's hybrid path, the CPU codecs); default 4.
    accept_jpeg_warnings: False (default) makes the CPU path's checks before decoding (truncated
    records, zeroed quantisation tables); the header size check is made either way.
    use_libturbojpeg: accepted for the ops' common options; nvImageCodec's decoders are used."""

    name = "nvimgcodec"

    def __init__(self, use_libturbojpeg: bool = True, accept_jpeg_warnings: bool = False,
                 device: str = "gpu", device_id: int = 0, num_cpu_threads: int = 4):
        self._codec = _import_nvimgcodec()
        if device not in ("gpu", "cpu"):
            raise ValueError(f"NvImageCodecBackend device must be 'gpu' or 'cpu', got {device!r}")
        import torch
        if device == "gpu" and not torch.cuda.is_available():
            raise RuntimeError("image backend 'nvimgcodec' needs a CUDA device; none is "
                               "visible to torch (use backend='cpu' or 'auto')")
        self.mode = device
        self.device_id = int(device_id)
        self.device = f"cuda:{self.device_id}" if device == "gpu" else "cpu"
        self.num_cpu_threads = int(num_cpu_threads)
        self.accept_jpeg_warnings = bool(accept_jpeg_warnings)
        self._lock = threading.Lock()
        self._state: Optional[dict] = None

    def __repr__(self) -> str:
        return f"NvImageCodecBackend(device={self.device!r})"

    @property
    def on_gpu(self) -> bool:
        return self.mode == "gpu"

    def task_ranges(self, n: int) -> list[tuple[int, int]]:
        return [(0, n)] if n else []

    def allocate(self, batch_size: int, ring_size: int, pin: bool) -> list[tuple]:
        if not self.on_gpu:
            return super().allocate(batch_size, ring_size, pin)
        return device_slots(self.output_sizes, batch_size, ring_size, self.device)

    def make_worker_state(self) -> dict:
        """One decoder (and CUDA stream), shared by the worker threads (one batch at a time)."""
        with self._lock:
            if self._state is None:
                import torch
                codec = self._codec
                if self.on_gpu:
                    decoder = codec.Decoder(device_id=self.device_id,
                                            max_num_cpu_threads=self.num_cpu_threads,
                                            options=":fancy_upsampling=1")
                else:
                    decoder = codec.Decoder(device_id=codec.NVIMGCODEC_DEVICE_CPU_ONLY,
                                            max_num_cpu_threads=self.num_cpu_threads,
                                            backends=[codec.Backend(codec.CPU_ONLY)])
                self._state = {
                    "decoder": decoder,
                    # default colour: sRGB, interleaved (RGB in every version's enum)
                    "params": codec.DecodeParams(apply_exif_orientation=False),
                    "stream": torch.cuda.Stream(self.device) if self.on_gpu else None}
            return self._state

    def decode_range(self, crops: CropParams, indices: np.ndarray, start: int, stop: int,
                     outs: tuple, state: dict,
                     describe: Optional[Callable[[int], str]] = None) -> None:
        import torch
        positions, samples, is_jpeg = checked_part(
            self.images, crops, indices, start, stop, not self.accept_jpeg_warnings,
            lambda k, index, problem: self._error(k, index, problem, describe))
        if not len(positions):
            return
        plan = region_plan(crops, positions)
        stream = state["stream"]
        with self._lock, (torch.cuda.stream(stream) if stream is not None else nullcontext()):
            regions = self._regions(plan, positions, samples, is_jpeg, state, describe)
            for v, out in enumerate(outs):
                height, width = crops.output_sizes[v]
                resized = []
                for m, region in enumerate(regions):
                    top, left, h, w = (int(c) for c in plan.slices[v, m])
                    y0, x0, y1, x1 = (float(c) for c in plan.rois[v, m])
                    resized.append(resize_box(region[top:top + h, left:left + w], y0, x0, y1,
                                              x1, height, width))
                stacked = torch.stack(resized)
                write_outputs(stacked if self.on_gpu else stacked.numpy(), positions, out,
                              crops.paste, v)
            if stream is not None:
                stream.synchronize()

    def _regions(self, plan, positions, samples, is_jpeg, state, describe) -> list:
        """Each position's decoded region, uint8 [h, w, 3] on the device."""
        import torch
        images = self.images
        regions: list = [None] * len(positions)
        jpegs = np.flatnonzero(is_jpeg)
        if len(jpegs):
            sources = [decode_source(self._codec, images.payload(int(samples[m])),
                                     plan.regions[m]) for m in jpegs]
            decoded = self._decode(state, sources)
            for m, image in zip(jpegs, decoded):
                if image is None:
                    raise self._error(int(positions[m]), int(samples[m]),
                                      "nvImageCodec could not decode it", describe)
                # no copy: the device buffer through __cuda_array_interface__, or the host one
                regions[m] = torch.as_tensor(image, device=self.device) if self.on_gpu \
                    else torch.from_numpy(np.asarray(image.cpu()))
        for m in np.flatnonzero(~is_jpeg):
            index = int(samples[m])
            top, left, h, w = (int(c) for c in plan.regions[m])
            stored = images.payload(index).reshape(int(images.heights[index]),
                                                   int(images.widths[index]), 3)
            regions[m] = torch.from_numpy(np.array(stored[top:top + h, left:left + w])).to(
                self.device)         # a copy: the file's pages are read-only
        return regions

    def _decode(self, state: dict, sources: list) -> list:
        """One batched decode.  nvImageCodec 0.9 and later decode into the previous batch's
        images (``images=``; each buffer grows to the largest region its position has had), so
        the decoder allocates nothing per batch once they have grown."""
        options = {"params": state["params"]}
        if state["stream"] is not None:
            options["cuda_stream"] = state["stream"].cuda_stream
        kept = state.setdefault("images", [])
        decoded = None
        if state.get("reuse", True) and len(kept) >= len(sources):
            try:
                decoded = state["decoder"].decode(sources, images=kept[:len(sources)], **options)
            except TypeError:              # before nvImageCodec 0.9: no images= to reuse
                state["reuse"] = False
        if decoded is None:
            decoded = state["decoder"].decode(sources, **options)
        if state.get("reuse", True) and all(image is not None for image in decoded):
            state["images"] = list(decoded) + kept[len(decoded):]
        return decoded

    def _error(self, k: int, index: int, reason: str,
               describe: Optional[Callable[[int], str]]) -> SampleError:
        role = describe(k) if describe is not None else ""
        return SampleError(index, self.images.name, f"cannot decode JPEG{role}: {reason}")


__all__ = ["NvImageCodecBackend", "decode_source"]
