"""bench/loader.py's child for NVIDIA DALI on the CPU (runs under the DALI interpreter)."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def make_pipeline(cfg):
    from nvidia.dali import fn, pipeline_def, types
    train = cfg["pipeline"] == "train"

    @pipeline_def(batch_size=cfg["batch_size"], num_threads=cfg["threads"], device_id=None,
                  seed=cfg.get("seed", 0) + 1, prefetch_queue_depth=2)
    def pipe():
        jpegs, labels = fn.readers.file(file_root=cfg["path"], random_shuffle=train,
                                        name="reader")
        if train:
            images = fn.decoders.image_random_crop(
                jpegs, device="cpu", output_type=types.RGB, random_area=[0.08, 1.0],
                random_aspect_ratio=[3 / 4, 4 / 3], num_attempts=10)
            images = fn.resize(images, resize_x=224, resize_y=224)
            images = fn.flip(images, horizontal=fn.random.coin_flip())
        else:
            images = fn.decoders.image(jpegs, device="cpu", output_type=types.RGB)
            images = fn.resize(images, resize_shorter=256)
            images = fn.crop(images, crop=(224, 224))
        return images, labels

    p = pipe()
    p.build()
    return p


def main(cfg):
    t = time.perf_counter()
    import numpy as np
    import nvidia.dali  # noqa: F401
    from nvidia.dali import fn  # noqa: F401
    import_s = time.perf_counter() - t
    extra = {"import_s": import_s, "version": nvidia.dali.__version__}

    def batches():
        p = make_pipeline(cfg)
        while True:
            images, labels = p.run()
            # One contiguous uint8 [B, 224, 224, 3] array, like the other loaders' batches.
            arr = np.asarray(images.as_tensor())
            yield len(arr), arr

    return common.throughput(batches, cfg, extra)


if __name__ == "__main__":
    common.run(main)
