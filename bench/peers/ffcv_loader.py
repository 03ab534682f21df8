"""bench/loader.py's child for FFCV 1.0.2 (runs under the FFCV interpreter)."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def make_loader(cfg):
    from ffcv.fields.basics import IntDecoder
    from ffcv.fields.rgb_image import (CenterCropRGBImageDecoder,
                                       RandomResizedCropRGBImageDecoder)
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import RandomHorizontalFlip, ToTensor
    train = cfg["pipeline"] == "train"
    image = [RandomResizedCropRGBImageDecoder((224, 224)), RandomHorizontalFlip(), ToTensor()] \
        if train else [CenterCropRGBImageDecoder((224, 224), ratio=224 / 256), ToTensor()]
    return Loader(cfg["path"], batch_size=cfg["batch_size"], num_workers=cfg["threads"],
                  order=OrderOption.RANDOM if train else OrderOption.SEQUENTIAL,
                  os_cache=True, drop_last=train, seed=cfg.get("seed", 0),
                  pipelines={"image": image, "label": [IntDecoder(), ToTensor()]})


def main(cfg):
    t = time.perf_counter()
    import torch  # noqa: F401
    import ffcv.loader  # noqa: F401
    import_s = time.perf_counter() - t
    import importlib.metadata as md
    extra = {"import_s": import_s, "version": md.version("ffcv")}
    return common.measure_loader(make_loader, cfg, extra)


if __name__ == "__main__":
    common.run(main)
