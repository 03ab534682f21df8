"""Reader.column and Reader.image_sizes, and the field-argument packing helpers."""
import numpy as np
import pytest

from fastdata import DatasetWriter, FormatError, IntField, NDArrayField, Reader, RGBImageField
from fastdata.demo import synthetic_photo
from fastdata.fields.base import pack_arguments, unpack_arguments
from fastdata.format import ARGUMENTS_SIZE

SIZES = [(60, 90), (120, 50), (33, 200), (80, 80)]      # (height, width) before max_resolution


@pytest.fixture(scope="module")
def beton(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("access") / "ds.beton")
    images = [synthetic_photo(np.random.default_rng(i), h, w) for i, (h, w) in enumerate(SIZES)]
    DatasetWriter(path, {"label": IntField(), "image": RGBImageField(max_resolution=100)},
                  page_size=1 << 21, num_workers=1, progress=False) \
        .from_indexed_dataset([(i, im) for i, im in enumerate(images)])
    return path


def test_column_is_the_fields_metadata(beton):
    with Reader(beton) as r:
        assert r.column("label").tolist() == [0, 1, 2, 3]
        column = r.column("image")
        assert column.dtype == r.fields["image"].metadata_dtype and len(column) == len(SIZES)
        assert [(int(c["height"]), int(c["width"])) for c in column] == \
            [r.read(i, "image").shape[:2] for i in range(len(SIZES))]
        with pytest.raises(KeyError, match="no field 'nope'"):
            r.column("nope")


def test_image_sizes_stored_and_original(beton):
    with Reader(beton) as r:
        sizes = r.image_sizes("image")
        assert sizes.original.tolist() == [list(s) for s in SIZES]
        assert sizes.stored.tolist() == [list(r.read(i, "image").shape[:2])
                                         for i in range(len(SIZES))]
        assert sizes.stored.max() == 100 and sizes.stored.dtype == np.int64
        for i in range(len(SIZES)):
            assert r.original_size(i, "image") == tuple(sizes.original[i][::-1])
        with pytest.raises(TypeError, match="'label' is not an image field"):
            r.image_sizes("label")


def test_argument_packing():
    dtype = np.dtype([("a", "<u4"), ("b", "<f8")])
    record = np.array((7, 2.5), dtype=dtype)
    packed = pack_arguments(record, b"tail")
    assert packed.dtype == np.uint8 and packed.shape == (ARGUMENTS_SIZE,)
    assert bytes(packed[dtype.itemsize:dtype.itemsize + 4]) == b"tail" and not packed[20:].any()
    back = unpack_arguments(packed, dtype)
    assert (int(back["a"]), float(back["b"])) == (7, 2.5)
    with pytest.raises(ValueError, match="exceed 1024"):
        pack_arguments(b"x" * (ARGUMENTS_SIZE + 1))
    # Every field type that stores arguments reads back what it wrote.
    field = NDArrayField(np.dtype("<i2"), (3, 4))
    again = NDArrayField.from_arguments(field.to_arguments())
    assert again.dtype == field.dtype and again.shape == field.shape
    with pytest.raises(FormatError):
        RGBImageField.from_arguments(pack_arguments(b"FDIM", np.array(99, "<u2")))
