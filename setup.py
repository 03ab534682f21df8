"""fastdata: a fast, pip-installable image data loader that reads and writes FFCV's .beton files."""
from setuptools import find_packages, setup

setup(
    name="fastdata",
    version="0.1.0",
    description="Fast image loading and label-aware augmentation for training vision models; "
                "reads and writes FFCV .beton files.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    # writers/ (the dataset converters) stays a top-level folder of the repository but is
    # installed inside the package, as fastdata.writers: a top-level package named `writers`
    # would clash with anyone else's.
    packages=find_packages(include=["fastdata", "fastdata.*"])
    + ["fastdata.writers"] + [f"fastdata.writers.{p}" for p in find_packages("writers")],
    package_dir={"fastdata.writers": "writers"},
    # Wheels only: every dependency below ships binary wheels with its own libjpeg-turbo / OpenCV,
    # so `pip install .` needs no compiler and no system library.  torch is not here on purpose:
    # only the loader needs it, and a bare `pip install torch` pulls a multi-GB CUDA build.
    install_requires=[
        "numpy>=1.23",
        "numba>=0.57",
        "opencv-python-headless>=4.6",
        "simplejpeg>=1.6",
        "pillow>=9.0",
        "tqdm>=4.60",
        # libturbojpeg 3 (region decoding) for the loader: pylibjxl's extension exports libjpeg-turbo
        # 3.1's TurboJPEG 3 API and, unlike the `turbojpeg` wheel, installs no module named
        # `turbojpeg` to shadow PyTurboJPEG's.  Wheels: x86-64 Linux, CPython 3.11+.  Pinned: we
        # use its exported symbols, not its Python API (fastdata/libturbojpeg.py checks them).
        "pylibjxl==0.5.0; platform_machine == 'x86_64' and sys_platform == 'linux' "
        "and python_version >= '3.11'",
    ],
    extras_require={
        "torch": ["torch>=2.0"],
        # GPU image backends (fastdata.backends): backend="dali" and backend="nvimgcodec" (the
        # versions tested: DALI 2.4, nvImageCodec 0.9).  These are the CUDA 12 builds; on CUDA 13
        # install nvidia-dali-cuda130 / nvidia-nvimgcodec-cu13 instead.  DALI also runs its CPU
        # operators without a GPU (what the tests use).
        "dali": ["nvidia-dali-cuda120>=2.4", "torch>=2.0"],
        "nvimgcodec": ["nvidia-nvimgcodec-cu12>=0.9", "nvidia-nvjpeg-cu12", "torch>=2.0"],
        # timm: tests/test_mix_timm.py compares Mixup/CutMix with the version fastdata follows.
        # pyturbojpeg: tests/test_pyturbojpeg_coexistence.py checks fastdata installs beside it.
        # moto[server]: the remote-file tests run a real S3-compatible server on 127.0.0.1.
        # assertpy: FFCV's own tests (tests/ffcv_upstream) use it; fastargs (and the
        # terminaltables it forgets to require) and torchmetrics: ffcv-imagenet's train_imagenet.py
        # (tests/test_ffcv_imagenet.py) imports them; webdataset: FFCV's from_webdataset.
        # pyyaml: tests/test_train_imagenet.py reads the training benchmark's configs.
        "test": ["pytest>=7", "psutil>=5", "timm==1.0.31", "pyturbojpeg==2.6.1",
                 "moto[server]>=5.0", "assertpy>=1.1", "fastargs>=1.2", "terminaltables>=3.1",
                 "torchmetrics>=1.0", "webdataset>=0.2", "pyyaml>=5"],
        # Reading .beton files from URLs (s3://, gs://, https://, ...): fsspec, and s3fs for S3;
        # other protocols need their fsspec package (gcsfs, ...).
        "remote": ["fsspec>=2023.12", "s3fs>=2023.12"],
        # bench/train_imagenet.py, loader_bound.py, gpu_train_check.py: models and configs.
        "bench": ["torch>=2.0", "torchvision>=0.15", "pyyaml>=5"],
    },
    entry_points={"console_scripts": ["fastdata=fastdata.cli:main"]},
)
