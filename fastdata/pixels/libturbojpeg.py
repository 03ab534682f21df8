"""libturbojpeg 3 from Numba: region-of-interest, DCT-scaled JPEG decoding with no GIL.

The PyPI wheel ``pylibjxl`` (x86-64 Linux, CPython 3.11+) links libjpeg-turbo 3.1 into its
extension module and exports the whole TurboJPEG 3 API from it (``tj3SetCroppingRegion``,
``tj3SetScalingFactor``, ...), under no top-level name that another package uses.  (The
``turbojpeg`` wheel also ships one, but installs a compiled module named ``turbojpeg`` that
shadows PyTurboJPEG's.)  We open that library with ctypes, privately (RTLD_LOCAL, so that the
libjpeg functions it also exports stay out of the process's global symbols), and hand the
addresses of the functions we call to LLVM, so Numba kernels call them directly (and Numba's
on-disk cache keeps working, which calling ctypes function objects would prevent).  Where to look, in order:
``FASTDATA_LIBTURBOJPEG`` (a path; when set, nothing else is tried), the ``pylibjxl`` extension,
a ``turbojpeg`` wheel's vendored copy (environments that still have it), and the system's
libturbojpeg as PyTurboJPEG finds it (``ctypes.util.find_library``); the first that has every
function we call wins (libjpeg-turbo 2's lacks the TurboJPEG 3 API and is passed over).

Two ABI facts, both for x86-64 System V, checked by tests: pointers and the opaque handle travel
as 64-bit integers, and the small structs passed by value travel in integer registers, so
``tjscalingfactor {int num, denom}`` is one 64-bit word ``num | denom << 32`` and
``tjregion {int x, y, w, h}`` is two, ``x | y << 32`` and ``w | h << 32``.

``AVAILABLE`` is False where no such library is found (or on other platforms, or with
``FASTDATA_NO_LIBTURBOJPEG=1``); the image decoders then fall back to decoding in Python with
simplejpeg (GIL released in C).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import glob
import importlib.util
import os
import platform
import sys
from typing import Iterator

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


# Every TurboJPEG 3 function this module calls: a candidate library must export them all.
REQUIRED_FUNCTIONS = ("tj3Init", "tj3Destroy", "tj3Set", "tj3Get", "tj3DecompressHeader",
                      "tj3SetScalingFactor", "tj3SetCroppingRegion", "tj3Decompress8",
                      "tj3GetErrorCode", "tj3GetErrorStr")


def candidate_libraries() -> Iterator[str]:
    """Paths that may hold libturbojpeg 3, in the order they are tried (see the module doc).
    Lazy: the system search runs ldconfig, which is skipped once a wheel's copy is taken."""
    override = os.environ.get("FASTDATA_LIBTURBOJPEG")
    if override:
        yield override
        return
    try:
        spec = importlib.util.find_spec("pylibjxl")  # locates the package without importing it
    except (ImportError, ValueError):
        spec = None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        yield from sorted(glob.glob(os.path.join(folder, "_pylibjxl*.so")))
    for base in sys.path:
        yield from sorted(glob.glob(os.path.join(base, "turbojpeg.libs", "libturbojpeg*.so*")))
    system = ctypes.util.find_library("turbojpeg")
    if system:
        yield system


def open_library(path: str) -> ctypes.CDLL | None:
    """The library at path, opened privately, if it exports every function we call; else None."""
    try:
        lib = ctypes.CDLL(path, mode=ctypes.RTLD_LOCAL)
        for name in REQUIRED_FUNCTIONS:
            getattr(lib, name)
    except (OSError, AttributeError):
        return None
    return lib


LIBRARY = None  # path of the libturbojpeg 3 in use, None where there is none
AVAILABLE = False
_lib = None
if (platform.machine() in ("x86_64", "AMD64") and sys.platform.startswith("linux")
        and os.environ.get("FASTDATA_NO_LIBTURBOJPEG") != "1"):
    # The by-value struct packing below is the x86-64 System V ABI: nowhere else.
    for _path in candidate_libraries():
        _lib = open_library(_path)
        if _lib is not None:
            import llvmlite.binding as _llvm
            for _name in REQUIRED_FUNCTIONS:
                _llvm.add_symbol(_name, ctypes.cast(getattr(_lib, _name), ctypes.c_void_p).value)
            LIBRARY, AVAILABLE = _path, True
            break

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
