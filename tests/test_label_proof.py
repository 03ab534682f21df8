"""Proof that the labels follow the pixels: a tiny CNN trained on random crops learns the right
classes from crop-pooled ReLabel targets, and the wrong ones from global labels.

Each training image shows its class's colour in one half and, in the other half, a distractor
of colour (class + 1) mod C, which a label map marks as that other class.  RandomResizedCrop
often keeps only one of the two squares: a global label then calls the distractor's colour by
the wrong class half the time, while the pooled label map names what the crop shows.
Validation images show a single square of their class's colour.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fastdata import DatasetWriter, IntField, LabelMapField, Loader, RGBImageField  # noqa: E402
from fastdata.ops import (CenterCrop, IntDecoder, OneHot, RandomHorizontalFlip,  # noqa: E402
                          RandomResizedCrop, Squeeze, ToTensor, ToTorchImage)
from fastdata.ops.relabel import LabelMapPool  # noqa: E402

C = 4
SIZE = 48
CELLS = 8
COLOURS = np.array([[230, 40, 40], [40, 200, 40], [50, 60, 230], [230, 220, 40]], np.uint8)


def _square(rng, image, label_map, half, colour_class, cell_scores):
    """Paint a square in the left (half 0) or right (half 1) half; mark its cells in the map."""
    side = int(rng.integers(16, 22))
    x0 = int(rng.integers(0, SIZE // 2 - side + 1)) + half * SIZE // 2
    y0 = int(rng.integers(0, SIZE - side + 1))
    image[y0:y0 + side, x0:x0 + side] = COLOURS[colour_class]
    cell = SIZE / CELLS
    for cy in range(CELLS):
        for cx in range(CELLS):
            centre_y, centre_x = (cy + 0.5) * cell, (cx + 0.5) * cell
            if y0 <= centre_y < y0 + side and x0 <= centre_x < x0 + side:
                cell_scores[cy, cx] = (colour_class, 8.0)


def make_sample(rng, label, distractor):
    image = (rng.normal(128, 20, (SIZE, SIZE, 3))).clip(0, 255).astype(np.uint8)
    cells = np.empty((CELLS, CELLS), dtype=object)
    cells.fill(None)
    half = int(rng.integers(0, 2))
    _square(rng, image, None, half, label, cells)
    if distractor:
        _square(rng, image, None, 1 - half, (label + 1) % C, cells)
    # Label map, top-2 per cell: the object's class (score 8) or, on background, two classes
    # at score 0 (the pooled softmax then leans on the objects the crop covers).
    scores = np.zeros((2, CELLS, CELLS), np.float32)
    ids = np.zeros((2, CELLS, CELLS), np.float32)
    for cy in range(CELLS):
        for cx in range(CELLS):
            if cells[cy, cx] is None:
                ids[:, cy, cx] = (0, 1)
            else:
                cls, score = cells[cy, cx]
                ids[:, cy, cx] = (cls, (cls + 2) % C)
                scores[0, cy, cx] = score
    return image, label, np.stack([scores, ids])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("proof")
    rng = np.random.default_rng(0)
    train = [make_sample(rng, i % C, distractor=True) for i in range(768)]
    val = [make_sample(rng, i % C, distractor=False)[:2] for i in range(256)]
    train_path, val_path = str(root / "train.beton"), str(root / "val.beton")
    DatasetWriter(train_path, {"image": RGBImageField(), "label": IntField(),
                               "relabel": LabelMapField(k=2, height=CELLS, width=CELLS)},
                  page_size=1 << 21, progress=False).from_indexed_dataset(train)
    DatasetWriter(val_path, {"image": RGBImageField(), "label": IntField()},
                  page_size=1 << 21, progress=False).from_indexed_dataset(val)
    return train_path, val_path


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, C))


def _train_and_validate(train_path, val_path, relabel: bool) -> float:
    image = [RandomResizedCrop(24, scale=(0.05, 0.5)), RandomHorizontalFlip(), ToTensor(),
             ToTorchImage()]
    if relabel:
        pipelines = {"image": image, "label": None,
                     "relabel": [LabelMapPool(image="image", num_classes=C), ToTensor()]}
        batch_ops = []
    else:
        pipelines = {"image": image, "label": [IntDecoder(), ToTensor(), Squeeze()],
                     "relabel": None}
        batch_ops = [OneHot(C)]
    loader = Loader(train_path, batch_size=64, num_workers=2, order="random", seed=0,
                    pipelines=pipelines, batch_ops=batch_ops)
    model = _model()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(6):
        for images, targets in loader:
            logits = model(images.float() / 255)
            loss = torch.sum(-targets * torch.log_softmax(logits, 1), 1).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    val = Loader(val_path, batch_size=64, drop_last=False, pipelines={
        "image": [CenterCrop(24, ratio=1.0), ToTensor(), ToTorchImage()],
        "label": [IntDecoder(), ToTensor(), Squeeze()]})
    correct = total = 0
    with torch.no_grad():
        for images, labels in val:
            correct += int((model(images.float() / 255).argmax(1) == labels).sum())
            total += len(labels)
    return correct / total


def test_crop_pooled_labels_beat_global_labels(files):
    # One torch thread, so the loader's decoding threads do not compete with torch's pool;
    # torch's setting is process-wide, so the tests that run after this one get theirs back.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        global_accuracy = _train_and_validate(*files, relabel=False)
        relabel_accuracy = _train_and_validate(*files, relabel=True)
    finally:
        torch.set_num_threads(previous)
    assert relabel_accuracy >= 0.9, (relabel_accuracy, global_accuracy)
    assert relabel_accuracy >= global_accuracy + 0.15, (relabel_accuracy, global_accuracy)
