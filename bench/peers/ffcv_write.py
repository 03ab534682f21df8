"""Write a .beton with FFCV's DatasetWriter as ffcv-imagenet's write_imagenet.py does
(ImageFolder order, PIL images converted to RGB, chunksize 100).  Runs under the FFCV interpreter.

    python ffcv_write.py '{"root": ..., "out": ..., "mode": "proportion", "max_resolution": 500,
                           "compress_probability": 0.5, "jpeg_quality": 90, "workers": 2}'
"""
import json
import os
import sys
import time

from PIL import Image
from ffcv.fields import IntField, RGBImageField
from ffcv.writer import DatasetWriter

cfg = json.loads(sys.argv[1])
# torchvision.datasets.ImageFolder's order and extensions.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
root = cfg["root"]
classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
samples = []
for label, name in enumerate(classes):
    for dirpath, _, fnames in sorted(os.walk(os.path.join(root, name), followlinks=True)):
        for fname in sorted(fnames):
            if fname.lower().endswith(IMG_EXTENSIONS):
                samples.append((os.path.join(dirpath, fname), label))


class ImageFolderLike:
    def __len__(self):
        return len(samples)

    def __getitem__(self, i):
        path, label = samples[i]
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB"), label


t0 = time.perf_counter()
writer = DatasetWriter(cfg["out"], {
    "image": RGBImageField(write_mode=cfg["mode"], max_resolution=cfg["max_resolution"],
                           compress_probability=cfg["compress_probability"],
                           jpeg_quality=cfg["jpeg_quality"]),
    "label": IntField(),
}, num_workers=cfg["workers"])
writer.from_indexed_dataset(ImageFolderLike(), chunksize=100)
print("RESULT " + json.dumps({"n": len(samples), "seconds": time.perf_counter() - t0}))
