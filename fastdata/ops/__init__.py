"""Image operations: resampling used by the writer now, and the loader's augmentation ops."""
