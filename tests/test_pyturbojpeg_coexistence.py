"""fastdata installs beside PyTurboJPEG (`pip install -e '.[test]'` installs pyturbojpeg 2.6.1).

fastdata once depended on the `turbojpeg` wheel for libjpeg-turbo 3, whose compiled module named
`turbojpeg` shadows PyTurboJPEG's `turbojpeg.py`.  It now takes the TurboJPEG 3 API from the
pylibjxl wheel's extension, opened privately; these tests check that PyTurboJPEG still imports
and decodes, and that fastdata's region decoder is there and agrees with it.
"""
import ctypes
import ctypes.util

import numpy as np
import simplejpeg

from fastdata.pixels import libturbojpeg


def _jpeg(height=96, width=128, seed=0):
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, width)[None, :, None] * np.ones((height, 1, 3))
    pixels = np.clip(ramp + rng.normal(0, 20, (height, width, 3)), 0, 255).astype(np.uint8)
    return simplejpeg.encode_jpeg(pixels, quality=90, colorsubsampling="420")


def test_pyturbojpeg_still_imports_beside_fastdata():
    import turbojpeg
    assert hasattr(turbojpeg, "TurboJPEG"), (
        f"`import turbojpeg` loads {turbojpeg.__file__}, not PyTurboJPEG's turbojpeg.py: a "
        "package installs a module named turbojpeg that shadows it (the `turbojpeg` wheel does)")
    from turbojpeg import TurboJPEG  # noqa: F401


def test_region_decoder_comes_from_pylibjxl():
    assert libturbojpeg.AVAILABLE, "no libturbojpeg 3 found (setup.py installs pylibjxl for it)"
    assert "pylibjxl" in libturbojpeg.LIBRARY, libturbojpeg.LIBRARY


def test_pyturbojpeg_decodes_with_the_library_fastdata_found():
    """The same library through both bindings: identical pixels (so a PyTurboJPEG user with no
    system libjpeg-turbo 3 can pass lib_path=libturbojpeg.LIBRARY, as the README says)."""
    from turbojpeg import TJPF_RGB, TurboJPEG
    buf = _jpeg()
    theirs = TurboJPEG(lib_path=libturbojpeg.LIBRARY).decode(buf, pixel_format=TJPF_RGB)
    handle = libturbojpeg.new_handle()
    try:
        src, info = np.frombuffer(buf, np.uint8), np.zeros(3, np.int64)
        assert libturbojpeg.read_header(handle, src, info) == 0
        width, height = int(info[0]), int(info[1])
        ours = np.zeros((height, width, 3), np.uint8)
        assert libturbojpeg.decode_region(handle, src, 1, 0, 0, width, height, ours) == 0
    finally:
        libturbojpeg.free_handle(handle)
    np.testing.assert_array_equal(ours, theirs)


def test_library_stays_out_of_the_global_symbol_namespace():
    """Opened with RTLD_LOCAL: pylibjxl also exports libjpeg's jpeg_* functions, which must not
    become process-wide definitions that other libraries' symbol lookups could bind to."""
    assert libturbojpeg.AVAILABLE
    assert not hasattr(ctypes.CDLL(None), "tj3SetCroppingRegion")


def test_a_library_without_the_turbojpeg3_api_is_passed_over():
    assert libturbojpeg.open_library(ctypes.util.find_library("c")) is None
    assert libturbojpeg.open_library("/nonexistent/libturbojpeg.so.0") is None
