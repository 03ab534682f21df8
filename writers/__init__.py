"""Dataset converters: turn a source (ImageNet-style folders, any image tree, any indexable
Python dataset) into a .beton file with fastdata.DatasetWriter."""
from .folder import find_images, write_folder
from .imagenet import ImageNetFolder, find_classes, write_imagenet
from .indexed import write_indexed_dataset
from .relabel import RelabelSamples, load_label_map

__all__ = ["find_images", "write_folder", "ImageNetFolder", "find_classes", "write_imagenet",
           "write_indexed_dataset", "RelabelSamples", "load_label_map"]
