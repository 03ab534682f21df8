"""A stand-in for torchvision's CIFAR10 for FFCV's tests, which download CIFAR-10: tests run
without a network.  Same interface and shapes (50,000 / 10,000 32x32 RGB PIL images, labels
0-9), procedurally drawn photograph-like images, the same for the same index every time."""
import numpy as np
from PIL import Image

from fastdata.demo import synthetic_photo


class CIFAR10:
    def __init__(self, root=None, train=True, transform=None, target_transform=None,
                 download=False):
        self.train = train
        self.transform, self.target_transform = transform, target_transform

    def __len__(self):
        return 50_000 if self.train else 10_000

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(index)
        rng = np.random.default_rng((int(self.train), index))
        image = Image.fromarray(synthetic_photo(rng, 32, 32))
        label = index % 10
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return image, label
