"""Multi-node training as users run it: two torchrun "nodes" on this machine (c10d rendezvous on
127.0.0.1), each reading the same s3:// file from moto's S3 server with its own cache directory;
across ranks every sample is seen exactly once per epoch."""
import importlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
importlib.import_module("s3fs")   # the "remote" extra: missing, these tests fail, not skip

from fastdata import DatasetWriter, IntField, RGBImageField  # noqa: E402
from fastdata.demo import synthetic_photo  # noqa: E402
from remote_servers import MotoServer, free_port  # noqa: E402

N = 240
EPOCHS = 2


@pytest.fixture(scope="module")
def s3_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("multinode") / "train.beton")
    samples = [(synthetic_photo(np.random.default_rng(i), 100, 120), i) for i in range(N)]
    DatasetWriter(path, {"image": RGBImageField(write_mode="raw"), "label": IntField()},
                  page_size=1 << 21, num_workers=1, progress=False).from_indexed_dataset(samples)
    server = MotoServer()
    try:
        yield server, server.upload(path, "bucket", "train.beton"), os.path.getsize(path)
    finally:
        server.stop()


@pytest.mark.slow
def test_two_torchrun_nodes_see_every_sample_once_per_epoch(s3_file, tmp_path):
    server, url, size = s3_file
    worker = os.path.join(os.path.dirname(__file__), "remote_multinode_worker.py")
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    nodes = []
    for node in range(2):
        cache = tmp_path / f"cache-node{node}"
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2",
                   "--nproc_per_node=1", "--rdzv_backend=c10d",
                   f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=fastdata-test",
                   "--max_restarts=0", worker, url, server.url, str(cache), str(tmp_path),
                   str(EPOCHS)]
        nodes.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, env=env))
    for p in nodes:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, out
    results = [json.load(open(tmp_path / f"rank{r}.json")) for r in range(2)]
    assert [r["world_size"] for r in results] == [2, 2]
    assert results[0]["cache_dir"] != results[1]["cache_dir"]
    for e in range(EPOCHS):
        seen = results[0]["seen"][e] + results[1]["seen"][e]
        assert len(results[0]["seen"][e]) == len(results[1]["seen"][e]) == N // 2
        assert sorted(seen) == list(range(N))            # each sample exactly once
    assert results[0]["seen"][0] != results[0]["seen"][1]   # a new order each epoch
    for r in results:        # each node fetched its pages once: the second epoch read locally
        assert 0 < r["bytes_fetched"] <= size
