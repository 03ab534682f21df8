#!/usr/bin/env bash
# Build the peer loaders bench/ measures fastdata against, each in its own venv under DIR:
#   DIR/ffcv    ffcv 1.0.2 built from source (.ci/ffcv_venv.sh: torch 2.13.0, numpy, numba, Pillow)
#   DIR/dali    nvidia-dali-cuda120 (runs CPU-only with device_id=None; ~1.1 GB)
#   DIR/torch   torch 2.14.1 + torchvision 0.29.1 (ImageFolder + DataLoader; ~5.5 GB)
#   DIR/simd    Pillow-SIMD built with AVX2, layered over DIR/torch through a .pth file
# and the Debian packages they need, plus the photo packages bench/make_photo_folder.py reads.
# None of these is a dependency of fastdata. Idempotent. Needs root for apt-get.
# Then: export FASTDATA_FFCV_PYTHON=DIR/ffcv/bin/python (and _DALI_, _TORCH_, _SIMD_), or pass
# --ffcv-python etc. to bench/loader.py and bench/write.py.
#
# usage: bench/setup_peers.sh DIR [ffcv] [dali] [torch] [simd]     (default: all four)
set -euo pipefail
DIR=${1:?usage: bench/setup_peers.sh DIR [ffcv] [dali] [torch] [simd]}; shift
WANT=${*:-ffcv dali torch simd}
PY=${PY:-python3}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$DIR"
export DEBIAN_FRONTEND=noninteractive
PHOTOS="plasma-workspace-wallpapers mate-backgrounds lomiri-wallpapers-16.04 lomiri-wallpapers-20.04"
if ! dpkg -s $PHOTOS libjpeg-dev zlib1g-dev >/dev/null 2>&1; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $PHOTOS libjpeg-dev zlib1g-dev time >/dev/null
fi
mkvenv() { [ -x "$1/bin/python" ] || "$PY" -m venv "$1"; }
for w in $WANT; do
  case $w in
    ffcv)
      PY=$PY "$HERE/../.ci/ffcv_venv.sh" "$DIR/ffcv" ;;
    dali)
      mkvenv "$DIR/dali"
      "$DIR/dali/bin/pip" install -q nvidia-dali-cuda120 numpy pillow psutil ;;
    torch)
      mkvenv "$DIR/torch"
      "$DIR/torch/bin/pip" install -q torch==2.14.1 torchvision==0.29.1 psutil ;;
    simd)
      [ -x "$DIR/torch/bin/python" ] || { echo "simd needs torch first"; exit 2; }
      mkvenv "$DIR/simd"
      CC="cc -mavx2" "$DIR/simd/bin/pip" install -q --no-binary pillow-simd pillow-simd
      "$DIR/torch/bin/python" -c 'import site; print(site.getsitepackages()[0])' \
        > "$("$DIR/simd/bin/python" -c 'import site; print(site.getsitepackages()[0])')/zz-torch-venv.pth" ;;
    *) echo "unknown peer: $w"; exit 2 ;;
  esac
  echo "ready: $DIR/$w"
done
