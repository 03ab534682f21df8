"""libturbojpeg 3 from Numba: region-of-interest, DCT-scaled JPEG decoding with no GIL.

The PyPI wheel ``turbojpeg`` (x86-64 Linux) ships a libturbojpeg with the TurboJPEG 3 API
(``tj3SetCroppingRegion``, ``tj3SetScalingFactor``, ...).  We load that library and declare its
functions to Numba as external symbols, so compiled kernels call them directly (and Numba's
on-disk cache keeps working, which calling ctypes function objects would prevent).

Two ABI facts, both for x86-64 System V, checked by tests: pointers and the opaque handle travel
as 64-bit integers, and the small structs passed by value travel in integer registers, so
``tjscalingfactor {int num, denom}`` is one 64-bit word ``num | denom << 32`` and
``tjregion {int x, y, w, h}`` is two, ``x | y << 32`` and ``w | h << 32``.

``AVAILABLE`` is False where the library cannot be found (other platforms); the image decoders
then fall back to decoding in Python with simplejpeg (GIL released in C).
"""
from __future__ import annotations

import ctypes
import glob
import os
import platform
import sys

import numpy as np
from numba import njit, types

# TurboJPEG 3 enums (turbojpeg.h)
TJINIT_DECOMPRESS = 1
TJPARAM_STOPONWARNING = 0
TJPARAM_JPEGWIDTH = 5
TJPARAM_JPEGHEIGHT = 6
TJPARAM_SUBSAMP = 4
TJPARAM_FASTUPSAMPLE = 9
TJPARAM_FASTDCT = 10
TJPF_RGB = 0
TJERR_WARNING = 0
# iMCU width in pixels by subsampling: 444, 422, 420, GRAY, 440, 411, 441
MCU_WIDTH = np.array([8, 16, 16, 8, 8, 32, 8], dtype=np.int64)


def _find_library() -> str | None:
    if platform.machine() not in ("x86_64", "AMD64") or not sys.platform.startswith("linux"):
        return None
    override = os.environ.get("FASTDATA_LIBTURBOJPEG")
    if override:
        return override if os.path.exists(override) else None
    for base in sys.path:
        hits = sorted(glob.glob(os.path.join(base, "turbojpeg.libs", "libturbojpeg*.so*")))
        if hits:
            return hits[0]
    return None


LIBRARY = _find_library()
AVAILABLE = False
if LIBRARY is not None and os.environ.get("FASTDATA_NO_LIBTURBOJPEG") != "1":
    try:
        import llvmlite.binding as _llvm
        _lib = ctypes.CDLL(LIBRARY)
        _ = (_lib.tj3Init, _lib.tj3SetCroppingRegion, _lib.tj3Decompress8)
        _llvm.load_library_permanently(LIBRARY)
        AVAILABLE = True
    except (OSError, AttributeError):
        AVAILABLE = False

_i64, _i32 = types.int64, types.int32
tj3Init = types.ExternalFunction("tj3Init", _i64(_i32))
tj3Destroy = types.ExternalFunction("tj3Destroy", types.void(_i64))
tj3Set = types.ExternalFunction("tj3Set", _i32(_i64, _i32, _i32))
tj3Get = types.ExternalFunction("tj3Get", _i32(_i64, _i32))
tj3DecompressHeader = types.ExternalFunction("tj3DecompressHeader", _i32(_i64, _i64, _i64))
tj3SetScalingFactor = types.ExternalFunction("tj3SetScalingFactor", _i32(_i64, _i64))
tj3SetCroppingRegion = types.ExternalFunction("tj3SetCroppingRegion", _i32(_i64, _i64, _i64))
tj3Decompress8 = types.ExternalFunction(
    "tj3Decompress8", _i32(_i64, _i64, _i64, _i64, _i32, _i32))
tj3GetErrorCode = types.ExternalFunction("tj3GetErrorCode", _i32(_i64))


def new_handle() -> int:
    """A decompressor handle for one thread (free it with free_handle)."""
    if not AVAILABLE:
        raise RuntimeError("libturbojpeg 3 is not available on this platform")
    return _new_handle()


@njit(cache=True)
def _new_handle() -> int:
    return tj3Init(np.int32(TJINIT_DECOMPRESS))


@njit(cache=True)
def free_handle(handle: int) -> None:
    tj3Destroy(handle)


def error_string(handle: int) -> str:
    """The last error message of a handle (Python side, for error reports)."""
    func = _lib.tj3GetErrorStr
    func.restype, func.argtypes = ctypes.c_char_p, [ctypes.c_void_p]
    return func(ctypes.c_void_p(handle)).decode("utf-8", "replace")


@njit(cache=True, nogil=True)
def read_header(handle: int, src: np.ndarray, info: np.ndarray) -> int:
    """Parse a JPEG's header: info[:3] = width, height, subsampling.  0 on success."""
    if tj3DecompressHeader(handle, src.ctypes.data, len(src)) != 0:
        return -1
    info[0] = tj3Get(handle, np.int32(TJPARAM_JPEGWIDTH))
    info[1] = tj3Get(handle, np.int32(TJPARAM_JPEGHEIGHT))
    info[2] = tj3Get(handle, np.int32(TJPARAM_SUBSAMP))
    return 0


@njit(cache=True, nogil=True, inline="always")
def scaled(size: int, denom: int) -> int:
    """TJSCALED(size, 1/denom): the size of a dimension decoded at 1/denom scale."""
    return (size + denom - 1) // denom


@njit(cache=True, nogil=True)
def decode_region(handle: int, src: np.ndarray, denom: int, x: int, y: int, w: int, h: int,
                  dst: np.ndarray) -> int:
    """Decode the region (x, y, w, h) of the image scaled by 1/denom into dst (h x w x 3 RGB,
    C-contiguous).  read_header must have been called on src; x must be a multiple of the
    scaled iMCU width.  Returns 0, or 1 when only a warning occurred (corrupt data decoded as
    best libjpeg could, as FFCV accepts), or -1 on error (see error_string)."""
    if tj3SetScalingFactor(handle, np.int64(1) | (np.int64(denom) << 32)) != 0:
        return -1
    if tj3SetCroppingRegion(handle, np.int64(x) | (np.int64(y) << 32),
                            np.int64(w) | (np.int64(h) << 32)) != 0:
        return -1
    status = tj3Decompress8(handle, src.ctypes.data, len(src), dst.ctypes.data,
                            np.int32(w * 3), np.int32(TJPF_RGB))
    if status != 0:
        return 1 if tj3GetErrorCode(handle) == TJERR_WARNING else -1
    return 0
