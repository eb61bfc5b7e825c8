"""Dataset specs and the checks made before any data is read (no Ray needed)."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from adasparse.config import ConfigError
from pipelines.data.sources import DataError, open_source
from pipelines.data.spec import load_spec, parse_spec

SPEC = {
    "location": ".",
    "label": "y",
    "time": "t",
    "domain_fields": [{"name": "d", "buckets": 8}],
    "categorical_fields": [{"name": "c", "buckets": 100}],
    "numeric_fields": ["x"],
}


def table(n=10, **over):
    cols = {
        "d": np.arange(n) % 3,
        "c": np.arange(n),
        "x": np.linspace(0, 1, n),
        "y": (np.arange(n) % 2).astype(np.int64),
        "t": np.arange(n, dtype=np.int64),
    }
    cols.update(over)
    return pa.table(cols)


def write_spec(tmp_path, **over):
    import yaml

    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump({**SPEC, **over}))
    return p


@pytest.mark.parametrize(
    "over,expected",
    [
        ({"labels": "y"}, "spec.yaml: labels: unknown key"),
        ({"label": "x"}, "label column 'x' is also listed as a feature"),
        ({"time": None}, "time: required to split by time (or give split_files)"),
        ({"s3": {"aws_secret_access_key": "abc"}}, "s3.aws_secret_access_key: credentials do not belong in a spec"),
        ({"split": {"train": 0}}, "split.train: Input should be greater than 0"),
        ({"format": "orc"}, "format: Input should be 'parquet' or 'csv'"),
    ],
)
def test_spec_errors_are_one_line_naming_the_key(tmp_path, over, expected):
    with pytest.raises(ConfigError) as err:
        load_spec(write_spec(tmp_path, **over))
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_relative_location_resolves_against_the_spec(tmp_path):
    (tmp_path / "data").mkdir()
    spec = load_spec(write_spec(tmp_path, location="data"))
    assert spec.location == str((tmp_path / "data").resolve())
    assert spec.features.num_domain_fields == 1


def test_missing_path_and_empty_directory(tmp_path):
    with pytest.raises(DataError, match=r"nope: no such file or directory"):
        open_source(parse_spec({**SPEC, "location": str(tmp_path / "nope")}))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: directory holds no .parquet files"):
        open_source(parse_spec({**SPEC, "location": str(tmp_path / "empty")}))


def test_missing_column_and_wrong_type_name_file_and_column(tmp_path):
    pq.write_table(table(), tmp_path / "a.parquet")
    pq.write_table(table().drop(["x"]), tmp_path / "b.parquet")
    with pytest.raises(DataError) as err:
        open_source(parse_spec({**SPEC, "location": str(tmp_path)}))
    assert str(err.value) == f"{tmp_path}/b.parquet: column 'x' (from the spec) is missing"
    (tmp_path / "b.parquet").unlink()
    pq.write_table(table(y=np.array(["yes"] * 10)), tmp_path / "c.parquet")
    with pytest.raises(DataError, match=r"c.parquet: column 'y' has type string, expected float/int/null"):
        open_source(parse_spec({**SPEC, "location": str(tmp_path)}))


def test_corrupt_file_among_good_ones_is_named(tmp_path):
    for i in range(3):
        pq.write_table(table(), tmp_path / f"part-{i}.parquet")
    good = (tmp_path / "part-1.parquet").read_bytes()
    (tmp_path / "part-1.parquet").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"part-1.parquet: not a readable parquet file"):
        open_source(parse_spec({**SPEC, "location": str(tmp_path)}))


def test_zero_row_shard_is_accepted(tmp_path):
    pq.write_table(table(), tmp_path / "a.parquet")
    pq.write_table(table().slice(0, 0), tmp_path / "b.parquet")
    src = open_source(parse_spec({**SPEC, "location": str(tmp_path)}))
    assert src.rows == [10, 0]


def test_another_partition_into_domains_keeps_every_field_as_an_input():
    from adasparse.config import ConfigError
    from pipelines.data.spec import parse_spec

    spec = parse_spec({"location": "x", "label": "y", "time": "t",
                       "domain_fields": [{"name": "g", "buckets": 4}, {"name": "a", "buckets": 8}],
                       "categorical_fields": [{"name": "s", "buckets": 16}, {"name": "item", "buckets": 100}]})
    part = spec.with_domain_fields(["s", "g"])
    assert [f.name for f in part.domain_fields] == ["s", "g"]
    assert [f.name for f in part.categorical_fields] == ["a", "item"]
    assert set(part.columns) == set(spec.columns)
    import pytest

    with pytest.raises(ConfigError, match=r"ingest.domain_fields: 'z' is not a categorical field of dataset 'dataset'"):
        spec.with_domain_fields(["z"], "ingest.domain_fields")
