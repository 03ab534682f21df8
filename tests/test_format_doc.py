"""docs/format.md, the format description fastdata/format.py follows, says what the code does:
its tables of header members, type ids, metadata layouts and image-argument members are read
from the page and compared with the dtypes and tables in the code."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from fastdata import format as fmt
from fastdata.fields import (CUSTOM_TYPE_ID, TYPE_IDS, BytesField, FloatField, IntField,
                             NDArrayField, RGBImageField)
from fastdata.fields import rgb_image

DOC = Path(__file__).resolve().parents[1] / "docs" / "format.md"


def section(number: int) -> str:
    """The text of section ``## <number>.`` of the page."""
    text = DOC.read_text(encoding="utf-8")
    match = re.search(rf"^## {number}\. .*?(?=^## |\Z)", text, re.S | re.M)
    assert match, f"docs/format.md has no section {number}"
    return match.group(0)


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the first markdown table in ``text``, cells stripped."""
    rows = [line for line in text.splitlines() if line.startswith("|")]
    return [[c.strip() for c in row.strip("|").split("|")] for row in rows[2:]]


def test_format_module_points_inside_the_repository():
    doc = fmt.__doc__
    assert "docs/format.md" in doc and "shared" not in doc
    assert DOC.is_file()


def test_header_table_matches_header_dtype():
    rows = table_rows(section(2))
    documented = [(int(offset), name.strip("`"), kind.strip("`")) for offset, name, kind, _ in rows]
    actual = [(fmt.HEADER_DTYPE.fields[n][1], n, fmt.HEADER_DTYPE.fields[n][0].str)
              for n in fmt.HEADER_DTYPE.names]
    assert documented == actual
    assert fmt.HEADER_DTYPE.itemsize == 24 == fmt.HEADER_SIZE


def test_type_id_table_matches_the_registry():
    rows = table_rows(section(3).split("Type ids:", 1)[1])
    documented = {int(tid): name for tid, name, _ in rows}
    custom = documented.pop(CUSTOM_TYPE_ID)
    assert "custom" in custom
    assert documented == {tid: cls.__name__ for tid, cls in TYPE_IDS.items()}


def test_metadata_layout_examples_match_metadata_dtype():
    make = {"RGBImage": RGBImageField, "Int": IntField, "Float": FloatField, "Bytes": BytesField,
            "NDArray": lambda: NDArrayField(np.float32, (2,))}
    rows = table_rows(section(4))
    assert len(rows) >= 5
    for fields, offsets, size in rows:
        names = [n.strip() for n in fields.strip("[]").split(",")]
        dtype = fmt.metadata_dtype([make[n]().metadata_dtype for n in names])
        assert [dtype.fields[f"f{i}"][1] for i in range(len(names))] == \
            [int(o) for o in offsets.split(",")], fields
        assert dtype.itemsize == int(size), fields


def test_image_argument_members_match_args_dtype():
    text = section(5)
    bullet = text[text.index("Arguments: FFCV writes zeros"):text.index("Side table")]
    members = [m.split()[0] for m in re.findall(r"`([a-z_]+ [^`]*)`", bullet)]
    assert members == list(rgb_image.ARGS_DTYPE.names)
    assert rgb_image.ARGS_MAGIC.decode() in bullet
    modes = re.search(r"index in ([a-z, ]+)\)", bullet).group(1).split(", ")
    assert tuple(modes) == rgb_image.WRITE_MODES


def test_reinforcement_record_size_is_as_documented():
    from fastdata.fields.reinforce import record_dtype
    assert "54 + 4 * top_k" in section(5)
    for k in (1, 10):
        assert record_dtype(k).itemsize == 54 + 4 * k
