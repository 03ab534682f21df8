"""Write a .beton with FFCV's DatasetWriter as ffcv-imagenet's write_imagenet.py does
(torchvision ImageFolder order, PIL images converted to RGB, chunksize 100), and print one JSON
line of timings and versions.  Runs under the FFCV interpreter; used by bench/write.py and
bench/loader.py.

    python ffcv_write.py '{"root": ..., "out": ..., "mode": "proportion", "max_resolution": 500,
                           "compress_probability": 0.5, "jpeg_quality": 90, "workers": 2,
                           "limit": null}'
"""
import json, os, resource, sys, time
t_start = time.perf_counter()
import numpy as np
from PIL import Image
from ffcv.writer import DatasetWriter
from ffcv.fields import IntField, RGBImageField
import importlib.metadata as md

cfg = json.loads(sys.argv[1])
t_imported = time.perf_counter()

# torchvision.datasets.ImageFolder's order: class folders sorted (every directory entry),
# then sorted(os.walk(class_dir, followlinks=True)) and sorted file names, by IMG_EXTENSIONS.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
root = cfg["root"]
classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
samples = []
for label, name in enumerate(classes):
    for dirpath, _, fnames in sorted(os.walk(os.path.join(root, name), followlinks=True)):
        for fname in sorted(fnames):
            if fname.lower().endswith(IMG_EXTENSIONS):
                samples.append((os.path.join(dirpath, fname), label))
if cfg.get("limit"):
    samples = samples[:cfg["limit"]]


class ImageFolderLike:
    """What torchvision's ImageFolder returns with its default pil_loader."""
    def __len__(self):
        return len(samples)

    def __getitem__(self, i):
        path, label = samples[i]
        with open(path, "rb") as f:
            img = Image.open(f)
            return img.convert("RGB"), label


def cpu():
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))


cpu0 = cpu()
t0 = time.perf_counter()
writer = DatasetWriter(cfg["out"], {
    "image": RGBImageField(write_mode=cfg["mode"], max_resolution=cfg["max_resolution"],
                           compress_probability=cfg["compress_probability"],
                           jpeg_quality=cfg["jpeg_quality"]),
    "label": IntField(),
}, num_workers=cfg["workers"])
writer.from_indexed_dataset(ImageFolderLike(), chunksize=100)
t1 = time.perf_counter()
import multiprocessing
for p in multiprocessing.active_children():   # FFCV leaves its finished workers unjoined
    p.join()
cpu1 = cpu()   # this process and its worker processes
# FFCV does not fsync; fastdata does (its time includes it). Measured apart, not in "seconds".
fd = os.open(cfg["out"], os.O_RDONLY)
os.fsync(fd)
os.close(fd)
t2 = time.perf_counter()
print(json.dumps({"n": len(samples), "seconds": t1 - t0, "fsync_seconds": t2 - t1,
                  "cpu_seconds": cpu1 - cpu0,
                  "import_seconds": t_imported - t_start, "setup_seconds": t0 - t_imported,
                  "ffcv": md.version("ffcv"), "numpy": np.__version__,
                  "opencv": __import__("cv2").__version__, "pillow": Image.__version__,
                  "torch": md.version("torch"), "python": sys.version.split()[0]}))
