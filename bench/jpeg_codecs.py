"""Benchmark the JPEG codec bindings available to fastdata, on real photos.

What it measures, each as images/s on one thread and on two threads (a
ThreadPoolExecutor(2), each thread working through half of the list), plus
the 2-thread/1-thread ratio (near 2 means the binding releases the GIL, near 1
means it holds it):

* decode to an RGB (or BGR, for OpenCV) uint8 numpy array
    - simplejpeg.decode_jpeg: full; fastdct+fastupsample; DCT-scaled so the
      result is the smallest libjpeg scale >= 1/2, 1/4, 1/8 of the image
    - cv2.imdecode: IMREAD_COLOR and IMREAD_REDUCED_COLOR_2/_4/_8
    - Pillow: Image.open().convert('RGB'), and with im.draft() at 1/2 size
      (both include np.asarray(), which a loader has to pay for)
    - libturbojpeg 3 (the copy shipped in the `turbojpeg` wheel) via ctypes:
      full, fastdct+fastupsample, and scaled 1/2, 1/4, 1/8
    - the `turbojpeg` wheel's own pybind11 decompress(), for comparison
* encode a decoded image at quality 90 with 4:2:0 chroma: cv2.imencode,
  simplejpeg.encode_jpeg, Pillow Image.save
* cv2.resize(INTER_AREA) of images whose long side exceeds 500 down to 500

Before timing, the ctypes libturbojpeg decoders are checked against OpenCV and
simplejpeg (same shape, mean abs difference < 2); a candidate that fails is
dropped from the table rather than timed.

`--max-side 500` first re-encodes every image the way FFCV's ImageNet
ResNet-50 .beton files store them (long side shrunk to <= 500 with
cv2.INTER_AREA, then cv2.imencode at quality 90), so both the "as on disk" and
the "FFCV-stored" sets can be measured. `--max-side 0` uses the files as-is.

All bytes are read into RAM first, so disk speed is not measured. OpenCV's own
thread pool is set to one thread so that "1 thread" means one core. On a
shared 2-core machine another process's load looks just like a GIL-bound
binding, so each pass also measures the CPU used by other processes and passes
where it exceeds 0.1 cores are redone after waiting for the machine to go
quiet (column "other load").

Run:
    python bench/jpeg_codecs.py --data DIR --n 1000 --max-side 0
    python bench/jpeg_codecs.py --data DIR --n 1000 --max-side 500
"""
import argparse
import ctypes
import glob
import importlib.util
import io
import os
import platform
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata

import cv2
import numpy as np
import simplejpeg
from PIL import Image
from PIL import features as pil_features

RESIZE_TARGET = 500
ENCODE_QUALITY = 90
JPEG_EXTENSIONS = ('.jpeg', '.jpg')

# ---------------------------------------------------------------------------
# libturbojpeg 3 through ctypes
# ---------------------------------------------------------------------------
# Values from libjpeg-turbo 3.0's turbojpeg.h (enum TJINIT, TJPF, TJSAMP, TJCS,
# TJERR, TJPARAM). TJPARAM is a plain 0-based enum:
#   STOPONWARNING=0 BOTTOMUP=1 NOREALLOC=2 QUALITY=3 SUBSAMP=4 JPEGWIDTH=5
#   JPEGHEIGHT=6 PRECISION=7 COLORSPACE=8 FASTUPSAMPLE=9 FASTDCT=10 ...
# check_turbojpeg() confirms them against the loaded library at run time.
TJINIT_DECOMPRESS = 1
TJPF_RGB = 0
TJSAMP_420 = 2
TJCS_YCbCr = 1
TJERR_FATAL = 1
TJPARAM_SUBSAMP = 4
TJPARAM_JPEGWIDTH = 5
TJPARAM_JPEGHEIGHT = 6
TJPARAM_PRECISION = 7
TJPARAM_COLORSPACE = 8
TJPARAM_FASTUPSAMPLE = 9
TJPARAM_FASTDCT = 10


class TJScalingFactor(ctypes.Structure):
    _fields_ = [('num', ctypes.c_int), ('denom', ctypes.c_int)]


def find_libturbojpeg():
    """Path of the libturbojpeg that auditwheel vendored into the turbojpeg wheel."""
    spec = importlib.util.find_spec('turbojpeg')
    if spec is None or spec.origin is None:
        return None
    libs = os.path.join(os.path.dirname(spec.origin), 'turbojpeg.libs')
    hits = sorted(glob.glob(os.path.join(libs, 'libturbojpeg*.so*')))
    return hits[0] if hits else None


def load_libturbojpeg(path):
    # ctypes.CDLL (unlike PyDLL) drops the GIL for the duration of each call.
    lib = ctypes.CDLL(path)
    c_int, c_size_t, c_void_p = ctypes.c_int, ctypes.c_size_t, ctypes.c_void_p
    sigs = {
        # tjhandle tj3Init(int initType)
        'tj3Init': ([c_int], c_void_p),
        # void tj3Destroy(tjhandle handle)
        'tj3Destroy': ([c_void_p], None),
        # int tj3Set(tjhandle handle, int param, int value)
        'tj3Set': ([c_void_p, c_int, c_int], c_int),
        # int tj3Get(tjhandle handle, int param)
        'tj3Get': ([c_void_p, c_int], c_int),
        # int tj3DecompressHeader(tjhandle, const unsigned char *jpegBuf, size_t jpegSize)
        'tj3DecompressHeader': ([c_void_p, ctypes.c_char_p, c_size_t], c_int),
        # int tj3Decompress8(tjhandle, const unsigned char *jpegBuf, size_t jpegSize,
        #                    unsigned char *dstBuf, int pitch, int pixelFormat)
        'tj3Decompress8': ([c_void_p, ctypes.c_char_p, c_size_t, c_void_p, c_int, c_int], c_int),
        # int tj3SetScalingFactor(tjhandle, tjscalingfactor scalingFactor)  (struct by value)
        'tj3SetScalingFactor': ([c_void_p, TJScalingFactor], c_int),
        # char *tj3GetErrorStr(tjhandle handle)
        'tj3GetErrorStr': ([c_void_p], ctypes.c_char_p),
        # int tj3GetErrorCode(tjhandle handle)
        'tj3GetErrorCode': ([c_void_p], c_int),
    }
    for name, (argtypes, restype) in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = argtypes, restype
    return lib


class TJDecoder:
    """Callable bytes -> HxWx3 RGB array; one tjhandle per thread (handles are not thread-safe)."""

    def __init__(self, lib, fast=False, denom=1):
        self.lib, self.fast, self.denom = lib, fast, denom
        self._local = threading.local()
        self._handles = []
        self._lock = threading.Lock()

    def _handle(self):
        h = getattr(self._local, 'h', None)
        if h is None:
            h = self.lib.tj3Init(TJINIT_DECOMPRESS)
            if not h:
                raise RuntimeError('tj3Init failed')
            if self.fast:
                for param in (TJPARAM_FASTDCT, TJPARAM_FASTUPSAMPLE):
                    if self.lib.tj3Set(h, param, 1) != 0:
                        raise RuntimeError(self.lib.tj3GetErrorStr(h).decode())
            self._local.h = h
            with self._lock:
                self._handles.append(h)
        return h

    def _fail(self, h):
        raise RuntimeError(self.lib.tj3GetErrorStr(h).decode(errors='replace'))

    def __call__(self, buf):
        lib, h = self.lib, self._handle()
        if lib.tj3DecompressHeader(h, buf, len(buf)) != 0:
            self._fail(h)
        w = lib.tj3Get(h, TJPARAM_JPEGWIDTH)
        ht = lib.tj3Get(h, TJPARAM_JPEGHEIGHT)
        if self.denom != 1:
            if lib.tj3SetScalingFactor(h, TJScalingFactor(1, self.denom)) != 0:
                self._fail(h)
            # TJSCALED(): the library rounds scaled dimensions up.
            w, ht = -(-w // self.denom), -(-ht // self.denom)
        out = np.empty((ht, w, 3), np.uint8)
        # Nonzero with a warning-level error still leaves a complete image.
        rc = lib.tj3Decompress8(h, buf, len(buf), out.ctypes.data, 0, TJPF_RGB)
        if rc != 0 and lib.tj3GetErrorCode(h) == TJERR_FATAL:
            self._fail(h)
        return out

    def close(self):
        with self._lock:
            for h in self._handles:
                self.lib.tj3Destroy(h)
            self._handles.clear()


# ---------------------------------------------------------------------------
# Candidates
# ---------------------------------------------------------------------------
def sj_full(buf):
    return simplejpeg.decode_jpeg(buf, colorspace='RGB')


def sj_fast(buf):
    return simplejpeg.decode_jpeg(buf, colorspace='RGB', fastdct=True, fastupsample=True)


def sj_scaled(denom):
    # simplejpeg picks the smallest libjpeg scale whose output still meets both minimums.
    def decode(buf):
        h, w, _, _ = simplejpeg.decode_jpeg_header(buf)
        return simplejpeg.decode_jpeg(buf, colorspace='RGB',
                                      min_height=-(-h // denom), min_width=-(-w // denom))
    return decode


def cv2_decoder(flag):
    def decode(buf):
        return cv2.imdecode(np.frombuffer(buf, np.uint8), flag)
    return decode


def pil_full(buf):
    return np.asarray(Image.open(io.BytesIO(buf)).convert('RGB'))


def pil_draft_half(buf):
    im = Image.open(io.BytesIO(buf))
    w, h = im.size
    im.draft('RGB', (w // 2, h // 2))
    return np.asarray(im.convert('RGB'))


def tj_pybind(buf):
    import turbojpeg
    return np.asarray(turbojpeg.decompress(buf, turbojpeg.PF.RGB))


def cv2_encode(pair):
    ok, enc = cv2.imencode('.jpg', pair[0], [cv2.IMWRITE_JPEG_QUALITY, ENCODE_QUALITY])
    return enc


def sj_encode(pair):
    return simplejpeg.encode_jpeg(pair[1], quality=ENCODE_QUALITY, colorspace='RGB',
                                  colorsubsampling='420')


def pil_encode(pair):
    out = io.BytesIO()
    Image.fromarray(pair[1]).save(out, 'JPEG', quality=ENCODE_QUALITY)  # 4:2:0 by default
    return out.getvalue()


def cv2_resize(bgr):
    h, w = bgr.shape[:2]
    s = RESIZE_TARGET / max(h, w)
    return cv2.resize(bgr, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------
def list_jpegs(root):
    paths = []
    for dirpath, _, names in os.walk(root):
        paths += [os.path.join(dirpath, n) for n in names if n.lower().endswith(JPEG_EXTENSIONS)]
    return sorted(paths)


def ffcv_store(buf, max_side):
    """Re-encode like FFCV's RGBImageField(max_resolution=max_side, jpeg_quality=90)."""
    img = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR)
    h, w = img.shape[:2]
    ratio = max_side / max(h, w)
    if ratio < 1:
        img = cv2.resize(img, (int(w * ratio), int(h * ratio)), interpolation=cv2.INTER_AREA)
    ok, enc = cv2.imencode('.jpg', img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return enc.tobytes()


def load_buffers(args):
    paths = list_jpegs(args.data)
    if not paths:
        raise SystemExit(f'no *.JPEG/*.jpg files under {args.data}')
    # A seeded sample spreads the images over all classes rather than the first few.
    paths = random.Random(args.seed).sample(paths, min(args.n, len(paths)))
    bufs, skipped = [], 0
    for p in paths:
        with open(p, 'rb') as f:
            buf = f.read()
        try:  # keep only what every decoder can handle (e.g. no CMYK)
            if simplejpeg.decode_jpeg_header(buf)[2] not in ('YCbCr', 'Gray'):
                skipped += 1
                continue
        except ValueError:
            skipped += 1
            continue
        bufs.append(ffcv_store(buf, args.max_side) if args.max_side > 0 else buf)
    return bufs, skipped


# ---------------------------------------------------------------------------
# Correctness checks for the ctypes path
# ---------------------------------------------------------------------------
def mad(a, b):
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def check_turbojpeg(lib, decoders, bufs, k=20):
    """Return {name: error or None}; also prints the evidence for the enum values."""
    sample = bufs[:k]
    h = lib.tj3Init(TJINIT_DECOMPRESS)
    try:
        hdr = [], []
        for buf in sample:
            if lib.tj3DecompressHeader(h, buf, len(buf)) != 0:
                raise RuntimeError(lib.tj3GetErrorStr(h).decode())
            ref = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR)
            hdr[0].append((lib.tj3Get(h, TJPARAM_JPEGHEIGHT), lib.tj3Get(h, TJPARAM_JPEGWIDTH))
                          == ref.shape[:2])
            hdr[1].append((lib.tj3Get(h, TJPARAM_PRECISION), lib.tj3Get(h, TJPARAM_SUBSAMP),
                           lib.tj3Get(h, TJPARAM_COLORSPACE)))
        roundtrip = {}
        for p in (TJPARAM_FASTUPSAMPLE, TJPARAM_FASTDCT):
            lib.tj3Set(h, p, 1)
            roundtrip[p] = lib.tj3Get(h, p)
    finally:
        lib.tj3Destroy(h)
    print(f'libturbojpeg header check on {len(sample)} images: WIDTH/HEIGHT match cv2 shape: '
          f'{sum(hdr[0])}/{len(sample)}; (PRECISION, SUBSAMP, COLORSPACE) seen: '
          f'{sorted(set(hdr[1]))} (expect (8, {TJSAMP_420}=420, {TJCS_YCbCr}=YCbCr)); '
          f'tj3Set/tj3Get round trip FASTUPSAMPLE, FASTDCT: {roundtrip}')

    # Each ctypes decoder against an independent reference decode of the same request.
    refs = {
        'full': lambda b: cv2.cvtColor(cv2_decoder(cv2.IMREAD_COLOR)(b), cv2.COLOR_BGR2RGB),
        'fast': sj_fast,
        2: sj_scaled(2), 4: sj_scaled(4), 8: sj_scaled(8),
    }
    results = {}
    for name, (kind, dec) in decoders.items():
        try:
            diffs, vs_full = [], []
            for buf in sample:
                out, ref = dec(buf), refs[kind](buf)
                if out.shape != ref.shape:
                    raise AssertionError(f'shape {out.shape} != reference {ref.shape}')
                diffs.append(mad(out, ref))
                if kind == 'fast':  # the flags must change something, or they were not applied
                    vs_full.append(mad(out, refs['full'](buf)))
            err = None if max(diffs) < 2 else f'mean abs diff {max(diffs):.3f} >= 2'
            if kind == 'fast' and err is None and max(vs_full) == 0:
                err = 'output identical to the accurate decode: flags had no effect'
            extra = f', vs accurate cv2 decode {np.mean(vs_full):.3f}' if vs_full else ''
            ref_name = {'full': 'cv2 IMREAD_COLOR', 'fast': 'simplejpeg fastdct+fastupsample'}.get(
                kind, f'simplejpeg 1/{kind}')
            print(f'  check {name}: max mean-abs-diff vs {ref_name} {max(diffs):.3f}{extra}'
                  f' -> {"OK" if err is None else "FAIL: " + err}')
        except Exception as e:  # a failing candidate is reported, not timed
            err = f'{type(e).__name__}: {e}'
            print(f'  check {name}: FAIL: {err}')
        results[name] = err
    return results


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------
def _work(fn, items):
    px = 0
    for x in items:
        out = fn(x)
        if isinstance(out, np.ndarray) and out.ndim == 3:  # decoded image, not encoded bytes
            px += out.shape[0] * out.shape[1]
    return px


def _busy_seconds():
    """CPU seconds spent by the whole machine, and by this process, so far."""
    try:
        with open('/proc/stat') as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
        machine = (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf('SC_CLK_TCK')  # minus idle, iowait
    except (OSError, ValueError):
        machine = float('nan')
    t = os.times()
    return machine, t.user + t.system


def wait_until_quiet(max_other, timeout, window=0.3):
    """Sleep until other processes use at most `max_other` cores (or `timeout` passes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m0, p0 = _busy_seconds()
        time.sleep(window)
        m1, p1 = _busy_seconds()
        if not (m1 - m0) - (p1 - p0) > max_other * window:  # NaN (no /proc) counts as quiet
            return


def measure(fn, items, threads, repeat, pool, max_other=0.1, max_extra=8, patience=120.0):
    """Best images/s over `repeat` undisturbed passes, output pixels, and the others' load.

    On a 2-core machine a busy neighbour process halves the 2-thread figure and
    would pass for a GIL-bound binding. So the CPU time used by everything else
    is measured per pass; passes where it exceeds `max_other` cores are redone
    (at most `max_extra` extra passes), each pass first waiting for a quiet
    machine (at most `patience` seconds of waiting in all). Returns (rate, pixels, other_cores, clean) for the chosen pass;
    clean is False if no undisturbed pass was had.
    """
    half = (len(items) + 1) // 2
    chunks = [items[:half], items[half:]]
    clean, dirty = [], []
    px = 0
    deadline = time.monotonic() + patience
    for _ in range(repeat + max_extra):
        wait_until_quiet(max_other, timeout=max(0.0, deadline - time.monotonic()))
        m0, p0 = _busy_seconds()
        t0 = time.perf_counter()
        if threads == 1:
            px = _work(fn, items)
        else:
            px = sum(f.result() for f in [pool.submit(_work, fn, c) for c in chunks])
        dt = time.perf_counter() - t0
        m1, p1 = _busy_seconds()
        other = max(0.0, (m1 - m0) - (p1 - p0)) / dt
        (clean if other <= max_other else dirty).append((len(items) / dt, other))
        if len(clean) >= repeat:
            break
    rate, other = max(clean or dirty)
    return rate, px, other, bool(clean)


# ---------------------------------------------------------------------------
# Versions
# ---------------------------------------------------------------------------
def embedded_libjpeg_turbo(path):
    """The version string libjpeg-turbo compiles into itself, if present in a binary."""
    try:
        with open(path, 'rb') as f:
            m = re.search(rb'libjpeg-turbo version ([0-9.]+) \(build (\d+)\)', f.read())
    except OSError:
        return None
    return f'{m.group(1).decode()} (build {m.group(2).decode()})' if m else None


def versions(tj_path):
    rows = [('python', platform.python_version(), ''), ('numpy', np.__version__, '')]
    jpeg_line = next((l.split(':', 1)[1].strip() for l in cv2.getBuildInformation().splitlines()
                      if l.strip().startswith('JPEG:')), '?')
    rows.append(('opencv-python-headless', cv2.__version__, f'statically linked: {jpeg_line}'))
    sj_so = glob.glob(os.path.join(os.path.dirname(simplejpeg.__file__), '_jpeg*.so'))
    rows.append(('simplejpeg', simplejpeg.__version__,
                 f'statically linked libjpeg-turbo {embedded_libjpeg_turbo(sj_so[0]) if sj_so else "?"}'))
    pil_libs = glob.glob(os.path.join(os.path.dirname(os.path.dirname(Image.__file__)),
                                      'pillow.libs', 'libjpeg*.so*'))
    pil_ljt = pil_features.version('libjpeg_turbo')
    rows.append(('Pillow', Image.__version__,
                 f'libjpeg-turbo {pil_ljt} (vendored {os.path.basename(pil_libs[0])})' if pil_libs
                 else f'libjpeg-turbo {pil_ljt}'))
    try:
        tj_ver = metadata.version('turbojpeg')
    except metadata.PackageNotFoundError:
        tj_ver = 'not installed'
    rows.append(('turbojpeg (wheel)', tj_ver,
                 f'{os.path.basename(tj_path)}: libjpeg-turbo {embedded_libjpeg_turbo(tj_path)}'
                 if tj_path else 'no vendored libturbojpeg found'))
    return rows


def cpu_model():
    try:
        with open('/proc/cpuinfo') as f:
            return next(l.split(':', 1)[1].strip() for l in f if l.startswith('model name'))
    except (OSError, StopIteration):
        return platform.processor() or '?'


# ---------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--data', required=True, help='folder searched recursively for *.JPEG/*.jpg')
    ap.add_argument('--n', type=int, default=1000, help='number of images')
    ap.add_argument('--max-side', type=int, default=500,
                    help='re-encode FFCV-style with long side <= this (0: use files as-is)')
    ap.add_argument('--repeat', type=int, default=2,
                    help='undisturbed passes per measurement; the best is kept')
    ap.add_argument('--seed', type=int, default=0, help='seed for choosing the images')
    args = ap.parse_args()

    cv2.setNumThreads(1)
    bufs, skipped = load_buffers(args)
    rgb_bgr = []
    for buf in bufs:
        bgr = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR)
        rgb_bgr.append((bgr, np.ascontiguousarray(bgr[:, :, ::-1])))
    big = [bgr for bgr, _ in rgb_bgr if max(bgr.shape[:2]) > RESIZE_TARGET]

    mp = np.array([b.shape[0] * b.shape[1] for b, _ in rgb_bgr]) / 1e6
    kb = np.array([len(b) for b in bufs]) / 1e3
    mode = f'FFCV-stored (long side <= {args.max_side}, cv2 q90)' if args.max_side > 0 else 'as on disk'
    print(f'# JPEG codec benchmark: {len(bufs)} images from {args.data} ({mode})')
    print(f'{skipped} skipped (not YCbCr/gray or unreadable); mean {mp.mean():.3f} MP, '
          f'{kb.mean():.1f} KB/file; {len(big)} with long side > {RESIZE_TARGET}; '
          f'CPU: {cpu_model()}, {os.cpu_count()} logical cores; best of {args.repeat} passes\n')

    decoders = [
        ('simplejpeg full', sj_full, bufs),
        ('simplejpeg fastdct+fastupsample', sj_fast, bufs),
        ('simplejpeg scaled >=1/2', sj_scaled(2), bufs),
        ('simplejpeg scaled >=1/4', sj_scaled(4), bufs),
        ('simplejpeg scaled >=1/8', sj_scaled(8), bufs),
        ('cv2.imdecode IMREAD_COLOR (BGR)', cv2_decoder(cv2.IMREAD_COLOR), bufs),
        ('cv2.imdecode REDUCED_COLOR_2', cv2_decoder(cv2.IMREAD_REDUCED_COLOR_2), bufs),
        ('cv2.imdecode REDUCED_COLOR_4', cv2_decoder(cv2.IMREAD_REDUCED_COLOR_4), bufs),
        ('cv2.imdecode REDUCED_COLOR_8', cv2_decoder(cv2.IMREAD_REDUCED_COLOR_8), bufs),
        ('Pillow open+convert RGB', pil_full, bufs),
        ('Pillow draft 1/2 + convert RGB', pil_draft_half, bufs),
    ]

    tj_path, tj_decoders = find_libturbojpeg(), []
    if tj_path is None:
        print('libturbojpeg not found next to the turbojpeg module; skipping the ctypes candidates\n')
    else:
        lib = load_libturbojpeg(tj_path)
        tj = {'libturbojpeg3 ctypes full': ('full', TJDecoder(lib)),
              'libturbojpeg3 ctypes fastdct+fastupsample': ('fast', TJDecoder(lib, fast=True))}
        for d in (2, 4, 8):
            tj[f'libturbojpeg3 ctypes scaled 1/{d}'] = (d, TJDecoder(lib, denom=d))
        print(f'Checking {tj_path}')
        for name, err in check_turbojpeg(lib, tj, bufs).items():
            if err is None:
                tj_decoders.append(tj[name][1])
                decoders.append((name, tj[name][1], bufs))
        decoders.append(('turbojpeg pybind11 decompress RGB', tj_pybind, bufs))
        print()

    def mean_mp(arrays):
        return sum(a.shape[0] * a.shape[1] for a in arrays) / max(len(arrays), 1) / 1e6

    # Encoders and the resize report their input size; decoders their output size (None).
    bgr_list = [bgr for bgr, _ in rgb_bgr]
    timed = [(name, fn, items, None) for name, fn, items in decoders] + [
        ('encode q90: cv2.imencode (BGR)', cv2_encode, rgb_bgr, mean_mp(bgr_list)),
        ('encode q90: simplejpeg.encode_jpeg 420', sj_encode, rgb_bgr, mean_mp(bgr_list)),
        ('encode q90: Pillow save', pil_encode, rgb_bgr, mean_mp(bgr_list)),
    ]
    if big:
        timed.append((f'cv2.resize INTER_AREA to {RESIZE_TARGET} (imgs > {RESIZE_TARGET} only)',
                      cv2_resize, big, mean_mp(big)))

    print('| candidate | 1-thread img/s | 2-thread img/s | 2/1 ratio | mean MP | other load |')
    print('|---|---:|---:|---:|---:|---:|')
    with ThreadPoolExecutor(2) as pool:
        for name, fn, items, mp_in in timed:
            r1, px, o1, ok1 = measure(fn, items, 1, args.repeat, pool)
            r2, _, o2, ok2 = measure(fn, items, 2, args.repeat, pool)
            mp_shown = mp_in if mp_in is not None else px / len(items) / 1e6
            flag = '' if ok1 and ok2 else ' (disturbed)'
            print(f'| {name} | {r1:.0f} | {r2:.0f} | {r2 / r1:.2f} | {mp_shown:.3f} '
                  f'| {max(o1, o2):.2f}{flag} |', flush=True)
    if not big:
        print(f'| cv2.resize INTER_AREA to {RESIZE_TARGET} | n/a: no image longer than '
              f'{RESIZE_TARGET} | | | | |')
    for d in tj_decoders:
        d.close()

    print('\nMean MP: decoded output size for decoders, input size for encode/resize.\n'
          'Other load: CPU cores used by other processes during the reported 1- or 2-thread\n'
          'pass (the larger). Passes above 0.1 are redone; "(disturbed)" means no clean pass\n'
          'was had and the row should be rerun.\n')
    print('| library | version | libjpeg-turbo |')
    print('|---|---|---|')
    for name, ver, ljt in versions(tj_path):
        print(f'| {name} | {ver} | {ljt} |')


if __name__ == '__main__':
    main()
