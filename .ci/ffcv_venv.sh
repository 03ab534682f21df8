#!/usr/bin/env bash
# Build ffcv 1.0.2 in a venv of its own, for the live compatibility tests (tests/test_ffcv_compat.py):
# those tests write files with FFCV and read them with fastdata, and the other way round, so they need
# a real FFCV, which is kept out of fastdata's own dependencies (it pins its own torch and builds a C
# extension against Debian's libturbojpeg and OpenCV).
# Idempotent: does nothing when DIR/bin/python already imports ffcv. Needs root for apt-get.
#
# usage: .ci/ffcv_venv.sh DIR      (then FASTDATA_FFCV_PYTHON=DIR/bin/python)
set -euo pipefail
DIR=${1:?usage: .ci/ffcv_venv.sh DIR}
PY=${PY:-python3}
if [ -x "$DIR/bin/python" ] && "$DIR/bin/python" -c "import ffcv" >/dev/null 2>&1; then
  echo "ffcv venv ready: $DIR"; exit 0
fi
# ffcv's setup.py finds libturbojpeg and OpenCV through pkg-config and compiles a C++ extension.
DEBS="pkg-config libturbojpeg0-dev libopencv-dev g++"
# ...and against Python's headers, which Debian's own python3 keeps in python3-dev.
if ! "$PY" -c 'import os, sysconfig, sys; sys.exit(not os.path.isfile(os.path.join(
    sysconfig.get_paths()["include"], "Python.h")))'; then
  DEBS="$DEBS python3-dev"
fi
if ! dpkg -s $DEBS >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $DEBS >/dev/null
fi
[ -x "$DIR/bin/python" ] || "$PY" -m venv "$DIR"
# ffcv 1.0.2 imports torch, numba and Pillow without declaring all of them, and its build needs them
# present (hence --no-build-isolation); torch 2.13.0 is the CPU-capable release it was tried with.
"$DIR/bin/pip" install -q torch==2.13.0 numpy numba pillow psutil
"$DIR/bin/pip" install -q --no-build-isolation ffcv==1.0.2
"$DIR/bin/python" -c "import ffcv; print('ffcv venv ready:', '$DIR', ffcv.__file__)"
