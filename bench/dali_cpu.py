"""The dali backend in DALI's CPU mode vs the Numba (cpu) backend vs DALI's own file-reader
pipeline, in one run: RandomResizedCrop 224 + horizontal flip, uint8 batches of 256, img/s and
img/s per core.  This prices fastdata's plumbing around DALI (external_source feeding, our crops)
against DALI reading its files itself.

    python bench/dali_cpu.py --data DIR [--threads 2] [--epochs 2]

- cpu: ``Loader`` with ``RandomResizedCrop(224)`` (the Numba kernel, libjpeg-turbo 3 region
  decoding with DCT scaling), ``num_workers=threads``;
- dali: the same loader with ``backend=DaliBackend(device="cpu")`` (one DALI pipeline per loader
  thread, ``num_threads=1``; region decode, antialiased resize, flip);
- dali-reader: ``fn.readers.file`` + ``fn.decoders.image_random_crop`` (device="cpu") +
  ``fn.resize(224, 224, antialias)`` + ``fn.flip`` (random), ``num_threads=threads``,
  ``device_id=None``, reading the JPEG folder.

The .beton is written once (write_mode="jpg": the source JPEGs stored as they are, so both sides
decode the same bytes).  Each contender runs ``--epochs`` epochs; the first warms up (Numba
compilation, pipeline construction) and the others are timed.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time


def make_beton(data: str, work: str) -> str:
    import fastdata
    from fastdata.writers import write_imagenet
    path = os.path.join(work, "train_jpg.beton")
    if not os.path.exists(path):
        write_imagenet(data, path, image_field=fastdata.RGBImageField(write_mode="jpg"),
                       progress=False)
    return path


def loader_rate(path: str, backend, threads: int, batch_size: int, epochs: int) -> float:
    import fastdata
    from fastdata.ops import IntDecoder, RandomHorizontalFlip, RandomResizedCrop, ToTensor
    loader = fastdata.Loader(path, batch_size=batch_size, num_workers=threads, order="random",
                             pipelines={"image": [RandomResizedCrop(224, backend=backend),
                                                  RandomHorizontalFlip(), ToTensor()],
                                        "label": [IntDecoder(), ToTensor()]})
    return timed(lambda: ((len(labels) for _, labels in loader)), epochs)


def dali_reader_rate(folder: str, threads: int, batch_size: int, epochs: int,
                     images: int) -> float:
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=batch_size, num_threads=threads, device_id=None, seed=1,
                  prefetch_queue_depth=2)
    def pipe():
        jpegs, labels = fn.readers.file(file_root=folder, random_shuffle=True, name="reader")
        decoded = fn.decoders.image_random_crop(jpegs, device="cpu", output_type=types.RGB,
                                                random_area=[0.08, 1.0],
                                                random_aspect_ratio=[3 / 4, 4 / 3],
                                                num_attempts=10)
        resized = fn.resize(decoded, resize_x=224, resize_y=224, antialias=True)
        return fn.flip(resized, horizontal=fn.random.coin_flip()), labels

    p = pipe()
    p.build()
    batches = -(-images // batch_size)

    def epoch():
        for _ in range(batches):
            out, labels = p.run()
            out.as_tensor()        # one dense uint8 [B, 224, 224, 3] batch, like the loaders'
            yield len(labels)
    return timed(epoch, epochs)


def timed(epoch, epochs: int) -> float:
    """img/s over epochs 2..epochs (the first warms up)."""
    for _ in epoch():
        pass
    count, start = 0, time.perf_counter()
    for _ in range(max(1, epochs - 1)):
        count += sum(epoch())
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="ImageNet-style folder with train/")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(),
                                                           "fastdata-dali-cpu"))
    args = parser.parse_args()
    os.makedirs(args.work_dir, exist_ok=True)
    from fastdata.backends.dali import DaliBackend
    import fastdata
    path = make_beton(args.data, args.work_dir)
    images = len(fastdata.Reader(path))
    rates = {
        "cpu (Numba kernel)": loader_rate(path, "cpu", args.threads, args.batch_size,
                                          args.epochs),
        "dali backend (CPU mode)": loader_rate(path, DaliBackend(device="cpu"), args.threads,
                                               args.batch_size, args.epochs),
        "DALI file reader": dali_reader_rate(os.path.join(args.data, "train"), args.threads,
                                             args.batch_size, args.epochs, images),
    }
    base = rates["cpu (Numba kernel)"]
    print(f"RandomResizedCrop 224 + flip, batches of {args.batch_size}, {images} images, "
          f"{args.threads} threads, {args.epochs - 1} timed epoch(s)")
    print(f"{'contender':<26}{'img/s':>9}{'img/s/core':>12}{'vs cpu':>8}")
    for name, rate in rates.items():
        print(f"{name:<26}{rate:>9.0f}{rate / args.threads:>12.0f}{rate / base:>8.2f}")


if __name__ == "__main__":
    main()
