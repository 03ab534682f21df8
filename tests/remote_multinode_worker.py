"""One "node" of tests/test_remote_multinode.py, started by torchrun: reads the S3 file with
distributed=True and its own cache directory, and writes the labels (= sample indices) it saw
per epoch to OUT/rank<r>.json."""
import json
import os
import sys

import torch.distributed as dist

sys.path.insert(0, os.path.dirname(__file__))
from fastdata import Loader  # noqa: E402
from fastdata.ops import IntDecoder, RandomResizedCrop, Squeeze, ToTensor, ToTorchImage  # noqa
from remote_servers import storage_options  # noqa: E402


def main(url: str, endpoint: str, cache_dir: str, out: str, epochs: int) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    loader = Loader(url, batch_size=16, num_workers=2, order="quasi_random", seed=5,
                    distributed=True, drop_last=False, cache_dir=cache_dir,
                    storage_options=storage_options(endpoint),
                    pipelines={"image": [RandomResizedCrop(16), ToTensor(), ToTorchImage()],
                               "label": [IntDecoder(), ToTensor(), Squeeze()]})
    seen = [[int(v) for _, labels in loader for v in labels] for _ in range(epochs)]
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"rank": rank, "world_size": dist.get_world_size(), "seen": seen,
                   "cache_dir": loader.reader.remote.cache_dir,
                   "bytes_fetched": loader.reader.remote.stats.bytes_fetched}, f)
    loader.close()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
