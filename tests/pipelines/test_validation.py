"""The check before training (pipelines/data/validation.py, ``adasparse validate``): every bad value
found in one pass, each reported as one line with its file, column, first row and count; the
training job refuses bad data before it trains."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipelines.cli import main
from pipelines.data.sources import open_source
from pipelines.data.spec import load_spec
from pipelines.data.validation import validate_source


def _copy(generated, out):
    out.mkdir(parents=True, exist_ok=True)
    for p in generated.glob("part-*.parquet"):
        shutil.copy(p, out / p.name)
    spec = load_spec(generated / "spec.yaml").model_dump(mode="json")
    (out / "spec.yaml").write_text(yaml.safe_dump({**spec, "location": "."}))
    return out / "spec.yaml"


def _edit(path, column, rows, value, null=False, as_float=False):
    """Set ``rows`` of ``column`` to ``value`` (or null); ``as_float`` first makes the column
    float64 (the generated label is int8: a NaN or 0.5 label needs a float column)."""
    t = pq.read_table(path)
    i = t.schema.get_field_index(column)
    field = t.schema.field(i).with_type(pa.float64()) if as_float else t.schema.field(i)
    vals = t[column].to_pylist()
    for r in rows:
        vals[r] = None if null else value
    pq.write_table(t.set_column(i, field, pa.array(vals, field.type)), path)


def test_clean_data_has_no_problems(ray_local, generated, capsys):
    report = validate_source(open_source(load_spec(generated / "spec.yaml")), columns="all")
    assert report.problems == [] and report.rows == 12_000 and len(report.files) == 4
    assert main(["validate", "--data", str(generated / "spec.yaml")]) == 0
    out = capsys.readouterr().out
    assert "12,000 rows in 4 files, no problems" in out and "split by time: train" in out


def test_every_bad_value_is_one_line_with_file_column_first_row_and_count(ray_local, generated, tmp_path, capsys):
    spec_path = _copy(generated, tmp_path / "d")
    d = tmp_path / "d"
    _edit(d / "part-000000.parquet", "label", [9, 5], 2.0)
    _edit(d / "part-000000.parquet", "label", [40], 0.5, as_float=True)
    _edit(d / "part-000001.parquet", "label", [7], None, null=True)
    num = load_spec(spec_path).numeric_fields[0]
    _edit(d / "part-000002.parquet", num, [101, 100, 2000], float("inf"))
    _edit(d / "part-000003.parquet", "time", [3], None, null=True)
    report = validate_source(open_source(load_spec(spec_path)))
    lines = [p.line() for p in report.problems]
    in_tasks = validate_source(open_source(load_spec(spec_path)), inline_rows=0)  # one Ray task per file
    assert [p.line() for p in in_tasks.problems] == lines and in_tasks.rows == 12_000
    assert lines == [
        f"{d}/part-000000.parquet: column 'label': label not 0 or 1 (2), first at row 5, 3 rows",
        f"{d}/part-000001.parquet: column 'label': null label, first at row 7, 1 row",
        f"{d}/part-000002.parquet: column {num!r}: infinite value (inf), first at row 100, 3 rows",
        f"{d}/part-000003.parquet: column 'time': null time, first at row 3, 1 row",
    ]
    assert main(["validate", "--data", str(spec_path), "--columns", "cheap"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"adasparse validate: {x}" for x in lines] + ["adasparse validate: 4 problems in 12,000 rows read from 4 files"]


def test_a_corrupt_page_names_its_file(ray_local, generated, tmp_path, capsys):
    spec_path = _copy(generated, tmp_path / "d")
    path = tmp_path / "d" / "part-000001.parquet"
    raw = bytearray(path.read_bytes())
    meta = pq.ParquetFile(path).metadata
    col = meta.row_group(0).column(meta.schema.to_arrow_schema().get_field_index("cat_0"))
    start = col.data_page_offset
    raw[start + 8: start + 200] = bytes(np.random.default_rng(0).integers(0, 256, 192, dtype=np.uint8))  # the footer stays valid
    path.write_bytes(bytes(raw))
    report = validate_source(open_source(load_spec(spec_path)), columns="all")
    assert [(p.file, p.column, p.what.startswith("unreadable: ")) for p in report.problems] == [(str(path), None, True)]
    assert main(["validate", "--data", str(spec_path)]) == 2
    assert capsys.readouterr().err.splitlines()[0].startswith(f"adasparse validate: {path}: unreadable: ")


def test_the_training_job_refuses_bad_data_before_it_trains(ray_local, generated, tmp_path, capsys):
    """A bad label in the last rows (the test split, which training meets last) is found before
    the vocabulary pass and any training: one line, exit 2, seconds after Ray is up."""
    spec_path = _copy(generated, tmp_path / "d")
    t = pq.read_table(tmp_path / "d" / "part-000003.parquet")
    late = int(np.argmax(t["time"].to_numpy()))
    _edit(tmp_path / "d" / "part-000003.parquet", "label", [late], -1.0)
    t0 = time.perf_counter()
    code = main(["train", "--data", str(spec_path), "--workers", "1", "--epochs", "1", "--hidden-units", "8",
                 "--out", str(tmp_path / "runs")])
    elapsed = time.perf_counter() - t0
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1] == (f"adasparse train: {tmp_path}/d/part-000003.parquet: column 'label': "
                                     f"label not 0 or 1 (-1), first at row {late:,}, 1 row")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("vocabulary.json"))
    assert elapsed < 60


def test_a_nan_label_is_not_0_or_1(ray_local, generated, tmp_path):
    spec_path = _copy(generated, tmp_path / "d")
    _edit(tmp_path / "d" / "part-000000.parquet", "label", [4], float("nan"), as_float=True)
    (p,) = validate_source(open_source(load_spec(spec_path))).problems
    assert (p.column, p.what, p.first_row, p.count) == ("label", "label not 0 or 1", 4, 1)


def test_the_check_runs_inside_a_tune_trials_small_placement_group(ray_local, generated):
    """A Tune trial holds a placement group of 0.01 CPU and captures its child tasks; the
    check's tasks must run outside it (as Ray Data's do), not wait forever or be refused."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    pg = placement_group([{"CPU": 0.01}])
    ray.get(pg.ready(), timeout=60)
    try:
        @ray.remote(num_cpus=0.01)
        def trial(spec_path):
            return validate_source(open_source(load_spec(spec_path)), inline_rows=0).rows

        strategy = PlacementGroupSchedulingStrategy(pg, placement_group_capture_child_tasks=True)
        assert ray.get(trial.options(scheduling_strategy=strategy).remote(str(generated / "spec.yaml")), timeout=120) == 12_000
    finally:
        remove_placement_group(pg)


@pytest.mark.fast
def test_a_corrupt_page_the_jobs_check_does_not_read_is_still_one_line_naming_the_file(ray_local, generated, tmp_path, capsys):
    """The job's own check reads the label, time and numeric columns only; a corrupt page in a
    categorical column fails the first read of training: the worker reading its own stream of
    row groups names the file and the group, in the shape of the check's own line."""
    spec_path = _copy(generated, tmp_path / "d")
    path = tmp_path / "d" / "part-000002.parquet"
    raw = bytearray(path.read_bytes())
    meta = pq.ParquetFile(path).metadata
    col = meta.row_group(0).column(meta.schema.to_arrow_schema().get_field_index("cat_0"))
    raw[col.data_page_offset + 8: col.data_page_offset + 200] = bytes(192)
    path.write_bytes(bytes(raw))
    code = main(["train", "--data", str(spec_path), "--workers", "1", "--epochs", "1", "--hidden-units", "8",
                 "--out", str(tmp_path / "runs")])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and last.startswith(f"adasparse train: {path} (row group 0): unreadable: "), last
