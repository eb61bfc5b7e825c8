"""One set of data rules (adasparse/portable/rules.py): the check of every file before training
(pipelines/data/validation.py), the job's encoder (pipelines/data/encoding.py) and an exported
model's runtime (adasparse/portable/runtime.py) accept or refuse each value alike, and what they
accept becomes the same number. No Ray."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from adasparse.portable import rules
from adasparse.portable.runtime import Encoder, ExportError
from pipelines.data.encoding import encode_table
from pipelines.data.sources import DataError
from pipelines.data.spec import parse_spec
from pipelines.data.validation import FileReport, check_table

SPEC = parse_spec({
    "name": "rules", "location": ".", "format": "parquet", "label": "y", "time": "t",
    "domain_fields": [{"name": "d", "buckets": 4}], "categorical_fields": [{"name": "c", "buckets": 8}],
    "numeric_fields": ["x"],
}, "rules")
F32_MAX = float(np.finfo(np.float32).max)
# one value a row: accepted or refused, the borderline ones included
LABELS = [0, 1, 0.0, 1.0, True, False, 1.00000001, 0.99999999, 1 + 2**-30, -0.0, 2, -1, 0.5, float("nan"), None]
NUMERICS = [0.0, -1.5, 1e-45, 3.0e38, F32_MAX, -F32_MAX, 3.5e38, -1e300, float("inf"), float("-inf"), float("nan"), None]
TIMES = [0, 1_700_000_000, -5, 2**53, 1.9, None]


def _table(y=0, x=0.0, t=1):
    cols = {"y": pa.array([y]), "t": pa.array([t]), "d": pa.array(["a"]), "c": pa.array(["b"]), "x": pa.array([x], pa.float64())}
    if y is None:
        cols["y"] = pa.array([None], pa.int64())
    if t is None:
        cols["t"] = pa.array([None], pa.int64())
    return pa.table(cols)


def _validation(table) -> list[str]:
    report = FileReport("f.parquet")
    check_table(table, SPEC, report, 0)
    return [f"column {p.column!r}: {p.what}" + (f" ({p.value})" if p.value else "") for p in report.problems]


def _encoder(table):
    try:
        return encode_table(table, SPEC), None
    except DataError as err:
        return None, str(err).split(": ", 1)[1]


def _runtime(table):
    manifest = {"features": {"domain_fields": ["d"], "categorical_fields": [{"name": "c", "buckets": 8}], "numeric_fields": ["x"],
                             "domain_sizes": [4]}, "missing_values": []}
    enc = Encoder(manifest, {"hashes_0": np.zeros(0, np.uint64), "ids_0": np.zeros(0, np.int64)})
    try:
        return enc(table)[1], None
    except ExportError as err:
        return None, str(err)


@pytest.mark.parametrize("y", LABELS, ids=repr)
def test_a_label_is_accepted_or_refused_alike_by_validation_and_the_encoder(y):
    table = _table(y=y)
    found = _validation(table)
    encoded, refused = _encoder(table)
    assert (found == []) == (refused is None), (found, refused)
    if found:
        assert refused == found[0]  # the same line after the file
    else:
        assert encoded["label"].tolist() == [float(y)] and float(y) in (0.0, 1.0)
    expect_ok = y is not None and not (isinstance(y, float) and np.isnan(y)) and float(y) in (0.0, 1.0)
    assert (found == []) == expect_ok


@pytest.mark.parametrize("x", NUMERICS, ids=repr)
def test_a_numeric_value_is_accepted_or_refused_alike_by_validation_the_encoder_and_the_runtime(x):
    table = _table(x=x)
    found = _validation(table)
    encoded, refused = _encoder(table)
    served, served_refused = _runtime(table)
    assert (found == []) == (refused is None) == (served_refused is None), (found, refused, served_refused)
    if found:
        assert refused == found[0] == served_refused
        with np.errstate(over="ignore"):
            assert x is not None and not np.isfinite(np.float32(x))  # refused exactly when float32 cannot hold it
    else:
        assert encoded["numeric"].tolist() == served.tolist() == [[0.0 if x is None or np.isnan(x) else float(np.float32(x))]]
        assert np.isfinite(encoded["numeric"]).all()


@pytest.mark.parametrize("t", TIMES, ids=repr)
def test_a_time_is_accepted_or_refused_alike_by_validation_and_the_encoder(t):
    table = _table(t=t)
    found = _validation(table)
    encoded, refused = _encoder(table)
    assert (found == []) == (refused is None) == (t is not None), (found, refused)
    if found:
        assert refused == found[0] == "column 't': null time"
    else:
        assert encoded["time"].tolist() == [int(t)]


def test_the_rules_flag_every_bad_row_of_a_column_once():
    col = pa.array([0, 1, 2, None, 1.5, 1], pa.float64())
    found = {v.what: v.mask.tolist() for v in rules.label_violations(col, "y")}
    assert found == {"null label": [False, False, False, True, False, False],
                     "label not 0 or 1": [False, False, True, False, True, False]}
    assert rules.label_violations(pa.array([0, 1, 1]), "y") == []
