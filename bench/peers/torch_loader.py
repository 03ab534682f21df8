"""bench/loader.py's child for torchvision ImageFolder + DataLoader (runs under the torch
interpreter, with Pillow, or the simd one, with Pillow-SIMD)."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def make_loader(cfg):
    import torch
    from torchvision import datasets
    from torchvision.transforms import v2
    train = cfg["pipeline"] == "train"
    if train:
        transform = v2.Compose([v2.RandomResizedCrop(224, antialias=True),
                                v2.RandomHorizontalFlip(), v2.PILToTensor()])
    else:
        transform = v2.Compose([v2.Resize(256, antialias=True), v2.CenterCrop(224),
                                v2.PILToTensor()])
    dataset = datasets.ImageFolder(cfg["path"], transform=transform)
    g = torch.Generator()
    g.manual_seed(cfg.get("seed", 0))
    return torch.utils.data.DataLoader(
        dataset, batch_size=cfg["batch_size"], shuffle=train, num_workers=cfg["threads"],
        persistent_workers=True, drop_last=train, prefetch_factor=2, generator=g)


def main(cfg):
    t = time.perf_counter()
    import torch
    import torchvision
    import PIL
    import_s = time.perf_counter() - t
    extra = {"import_s": import_s, "version": f"torch {torch.__version__}, torchvision "
             f"{torchvision.__version__}, PIL {PIL.__version__}", "pil": PIL.__version__}

    return common.measure_loader(make_loader, cfg, extra)


if __name__ == "__main__":
    common.run(main)
