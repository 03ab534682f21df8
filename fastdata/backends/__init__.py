"""Image backends: what turns an image decoder's ``CropParams`` into pixels (see ``base``).

- ``cpu`` (``cpu.CPUBackend``, the default): the Numba kernel with libjpeg-turbo 3's region
  decoder, in the loader's worker threads;
- ``dali`` (``dali.DaliBackend``): an NVIDIA DALI pipeline fed with the record bytes and the
  boxes and flips the sampler drew (GPU, or DALI's CPU operators without one);
- ``nvimgcodec`` (``nvimgcodec.NvImageCodecBackend``): nvImageCodec's batched region decode
  on the GPU, resized and flipped with torch on the device;
- ``auto`` (``auto.auto_backend``): on a machine with a GPU, a ``HybridBackend`` that splits
  each batch's decoding between the CPU threads and the GPU; else the CPU backend.

Names are imported on first use: naming a backend never imports DALI or nvImageCodec.
"""
import importlib

_WHERE = {
    "ImageBackend": "base", "StoredImages": "base", "BACKENDS": "base", "make_backend": "base",
    "RegionPlan": "base", "region_plan": "base", "write_outputs": "base",
    "CPUBackend": "cpu", "DaliBackend": "dali", "NvImageCodecBackend": "nvimgcodec",
    "HybridBackend": "auto", "auto_backend": "auto",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
