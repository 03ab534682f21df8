"""Rendering stored augmentation records into the pixels the teacher sees."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from fastdata.reader import Reader


class Renderer:
    """Renders records exactly as the loader replays them: ReplayedCrop's crops for the
    records (``crops_for_records``), decoded through its image backend and mixed with their
    partners (``replay_range``), in ``num_workers`` threads (0: the calling thread)."""

    def __init__(self, reader: Reader, image: str, output_size: tuple, batch_size: int,
                 num_workers: int):
        from fastdata.ops.replay import ReplayedCrop
        self.decoder = ReplayedCrop(output_size)
        self.decoder.bind_image(reader, image, reader.field_names.index(image))
        self.decoder.setup_backend(batch_size)
        self.num_workers = num_workers
        # num_workers=0: render in the calling thread.
        self.pool = ThreadPoolExecutor(num_workers, thread_name_prefix="fastdata-reinforce") \
            if num_workers else None
        self.local = threading.local()
        self.states: list = []
        self.lock = threading.Lock()

    def _state(self) -> dict:
        state = getattr(self.local, "state", None)
        if state is None:
            state = self.local.state = self.decoder.make_worker_state()
            with self.lock:
                self.states.append(state)
        return state

    def render(self, indices: np.ndarray, recs: np.ndarray, out: np.ndarray) -> np.ndarray:
        """uint8 [n, H, W, 3]: record recs[k] of sample indices[k], for each k."""
        indices = np.ascontiguousarray(indices, np.int64)
        crops = self.decoder.crops_for_records(indices, recs)
        n = len(indices)
        if self.pool is None:
            self.decoder.replay_range(crops, indices, 0, n, out, self._state())
            return out[:n]
        step = max(1, -(-n // self.num_workers))
        futures = [self.pool.submit(lambda s: self.decoder.replay_range(
            crops, indices, s, min(s + step, n), out, self._state()), s)
            for s in range(0, n, step)]
        for f in futures:
            f.result()
        return out[:n]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
        for state in self.states:
            self.decoder.release_worker_state(state)
