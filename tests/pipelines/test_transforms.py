"""Batch encoding: hashing, missing values, label/numeric checks naming file and column."""

import numpy as np
import pyarrow as pa
import pytest

from adasparse.encoding import field_hashes
from adasparse.portable.hashing import hash_to_buckets
from pipelines.data.sources import DataError
from pipelines.data.spec import parse_spec
from pipelines.data.encoding import encode_table

from test_data_spec import SPEC, table


def spec(**over):
    return parse_spec({**SPEC, **over})


def with_path(t, name="/data/part-3.parquet"):
    return t.append_column("path", pa.array([name] * t.num_rows))


def test_encodes_shapes_and_buckets():
    out = encode_table(table(), spec())
    assert out["cat_ids"].shape == (10, 2) and out["numeric"].shape == (10, 1)
    assert out["cat_ids"][4, 1] == hash_to_buckets(np.array([4]), "c", 100)[0]
    assert out["label"].dtype == np.float32 and out["time"].tolist() == list(range(10))
    assert len(set(out["domain"].tolist())) == 3


@pytest.mark.parametrize(
    "over,expected",
    [
        ({"y": pa.array([0, 1, None, 0, 1, 0, 1, 0, 1, 0])}, "/data/part-3.parquet: column 'y': null label"),
        ({"y": np.array([0, 1, 2, 0, 1, 0, 1, 0, 1, 0])}, "/data/part-3.parquet: column 'y': label not 0 or 1 (2)"),
        ({"x": np.array([0.0, np.inf] + [0.0] * 8)}, "/data/part-3.parquet: column 'x': infinite value (inf)"),
        ({"t": pa.array([None] + list(range(9)), pa.int64())}, "/data/part-3.parquet: column 't': null time"),
    ],
)
def test_bad_values_name_file_and_column(over, expected):
    with pytest.raises(DataError) as err:
        encode_table(with_path(table(**over)), spec())
    assert str(err.value) == expected


def test_missing_values_documented_handling():
    t = table(
        c=pa.array([5, -1, None, 5, 7, -1, 1, 2, 3, 4]),
        x=pa.array([1.0, np.nan, None, 2.0, 0, 0, 0, 0, 0, 0]),
    )
    out = encode_table(t, spec())
    c = out["cat_ids"][:, 1]
    assert c[1] == c[2] == c[5]  # -1 and null share the missing bucket
    assert c[1] == field_hashes(np.array([0]), "c", np.array([True]))[0] % 100
    assert out["numeric"][:, 0].tolist()[:4] == [1.0, 0.0, 0.0, 2.0]  # NaN and null -> 0


def test_string_and_float_categoricals():
    t = table(c=pa.array(["a", "b", "", "a", None, "b", "c", "d", "e", "f"]))
    out = encode_table(t, spec())
    c = out["cat_ids"][:, 1]
    assert c[0] == c[3] and c[1] == c[5] and c[2] == c[4]
    ints = encode_table(table(c=np.array([3.0, 4.0] * 5)), spec())["cat_ids"][:, 1]
    assert ints[0] == hash_to_buckets(np.array([3]), "c", 100)[0]  # integral floats hash as ints
