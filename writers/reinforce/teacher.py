"""The teacher loop: draw each image's augmentations, render them as the loader will replay
them, run the teacher on the batch and keep its top-k softmax probabilities."""
from __future__ import annotations

import importlib
import os
import tempfile
from typing import Any, Callable, Optional

import numpy as np

from fastdata.constants import IMAGENET_MEAN, IMAGENET_STD, MAX_CLASS_ID
from fastdata.fields.reinforce import ReinforcementField
from fastdata.reader import Reader
from fastdata.workers import resolve_workers
from fastdata.writer import DatasetWriter

from .copied import copied_fields, page_size_for, source_image
from .render import Renderer
from .sampling import Augmenter


def resolve_teacher(teacher: Any) -> Callable:
    """A callable from a torch.nn.Module, a callable, or a 'module:attribute' string (an
    nn.Module subclass found there is instantiated with no arguments)."""
    import torch
    if isinstance(teacher, str):
        module, sep, attr = teacher.partition(":")
        if not sep or not module or not attr:
            raise ValueError(f"teacher must be 'module:callable', got {teacher!r}")
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        teacher = obj
        if isinstance(teacher, type) and issubclass(teacher, torch.nn.Module):
            teacher = teacher()
    if not callable(teacher):
        raise TypeError(f"teacher {teacher!r} is not callable")
    return teacher


def reinforce(data_path: str, teacher: Any, out: str, num_augs: int, top_k: int,
              batch_size: int = 64, device: Optional[str] = None, seed: int = 0,
              mixup_p: float = 0.0, mixup_alpha: float = 1.0, cutmix_p: float = 0.0,
              cutmix_alpha: float = 1.0, output_size: Any = 224, image: Optional[str] = None,
              field_name: str = "reinforce", num_workers: int = -1, progress: bool = True,
              tmp_dir: Optional[str] = None):
    """Write ``out``: the fields of ``data_path`` copied as stored, plus ReinforcementField
    ``field_name`` with ``num_augs`` augmentations per image and the teacher's ``top_k``.

    teacher: a torch.nn.Module or callable mapping float32 [B, 3, H, W] (ImageNet mean/std
    normalised) to logits [B, C], or a 'module:callable' string; softmax is applied here.
    num_workers: threads that render the crops and write the file (-1: every core; 0: none,
    all in the calling thread).  Returns the DatasetWriter's WriteReport."""
    import torch
    from tqdm.auto import tqdm
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    field = ReinforcementField(num_augs, top_k, size)
    model = resolve_teacher(teacher)
    if isinstance(model, torch.nn.Module):
        model = model.to(device).eval()
    workers = resolve_workers(num_workers)
    reader = Reader(data_path)
    try:
        image, original = source_image(reader, image, field_name)
        aug = Augmenter(original, num_augs, top_k, size, seed, mixup_p, mixup_alpha,
                        cutmix_p, cutmix_alpha)
        n = len(reader)
        tmp = tempfile.TemporaryDirectory(dir=tmp_dir or os.path.dirname(os.path.abspath(out)))
        ids_all = np.lib.format.open_memmap(os.path.join(tmp.name, "ids.npy"), "w+", np.int16,
                                            (n, num_augs, top_k))
        probs_all = np.lib.format.open_memmap(os.path.join(tmp.name, "probs.npy"), "w+",
                                              np.float16, (n, num_augs, top_k))
        renderer = Renderer(reader, image, size, batch_size, workers)
        mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
        buf = np.empty((batch_size, *size, 3), np.uint8)
        chunk = max(1, -(-4 * batch_size // num_augs))
        bar = tqdm(total=n * num_augs, desc="teacher", unit="crop", disable=not progress)
        try:
            for s in range(0, n, chunk):
                e = min(n, s + chunk)
                recs = np.concatenate([aug.records(i) for i in range(s, e)])
                flat_idx = np.repeat(np.arange(s, e, dtype=np.int64), num_augs)
                ids_out = np.empty((len(recs), top_k), np.int16)
                probs_out = np.empty((len(recs), top_k), np.float16)
                for b in range(0, len(recs), batch_size):
                    sl = slice(b, min(b + batch_size, len(recs)))
                    pixels = renderer.render(flat_idx[sl], recs[sl], buf)
                    x = torch.from_numpy(pixels).to(device).permute(0, 3, 1, 2).float()
                    x = (x / 255.0 - mean) / std
                    with torch.inference_mode():
                        logits = model(x)
                    logits = torch.as_tensor(logits).float()
                    if logits.dim() != 2 or logits.shape[0] != x.shape[0]:
                        raise ValueError(f"teacher returned shape {tuple(logits.shape)}, expected "
                                         f"[{x.shape[0]}, num_classes]")
                    if logits.shape[1] < top_k or logits.shape[1] > MAX_CLASS_ID + 1:
                        raise ValueError(f"teacher has {logits.shape[1]} classes: need top_k "
                                         f"{top_k} <= classes <= {MAX_CLASS_ID + 1}")
                    p, i = torch.softmax(logits, dim=1).topk(top_k, dim=1)
                    ids_out[sl] = i.cpu().numpy()
                    probs_out[sl] = p.cpu().numpy()
                    bar.update(sl.stop - sl.start)
                ids_all[s:e] = ids_out.reshape(e - s, num_augs, top_k)
                probs_all[s:e] = probs_out.reshape(e - s, num_augs, top_k)
        finally:
            bar.close()
            renderer.close()

        fields = copied_fields(reader)
        fields[field_name] = field

        def load(i: int) -> tuple:
            recs = aug.records(i)
            recs["ids"], recs["probs"] = ids_all[i], probs_all[i]
            return (*([i] * (len(fields) - 1)), recs)

        try:
            return DatasetWriter(out, fields, page_size=page_size_for(reader, field),
                                 num_workers=num_workers, progress=progress).write(n, load)
        finally:
            del ids_all, probs_all
            tmp.cleanup()
    finally:
        reader.close()
