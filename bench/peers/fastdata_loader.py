"""bench/loader.py's child for fastdata (runs under the fastdata interpreter)."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def make_loader(cfg):
    from fastdata.loader import Loader
    from fastdata.ops.decoders import IntDecoder
    from fastdata.ops.image_decoders import CenterCrop, RandomHorizontalFlip, RandomResizedCrop
    from fastdata.ops.tensor import ToTensor
    train = cfg["pipeline"] == "train"
    image = [RandomResizedCrop(224), RandomHorizontalFlip(), ToTensor()] if train else \
        [CenterCrop(224, ratio=224 / 256), ToTensor()]
    return Loader(cfg["path"], batch_size=cfg["batch_size"], num_workers=cfg["threads"],
                  order="random" if train else "sequential", seed=cfg.get("seed", 0),
                  pipelines={"image": image, "label": [IntDecoder(), ToTensor()]},
                  drop_last=train, os_cache=True)


def main(cfg):
    t = time.perf_counter()
    import torch  # noqa: F401
    import fastdata.loader  # noqa: F401
    import_s = time.perf_counter() - t
    import fastdata
    extra = {"import_s": import_s, "version": fastdata.__version__, "from": fastdata.__file__,
             "numba_cache_dir": os.environ.get("NUMBA_CACHE_DIR")}
    return common.measure_loader(make_loader, cfg, extra)


if __name__ == "__main__":
    common.run(main)
