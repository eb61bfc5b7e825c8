"""The IJCAI-18 (IAAC) converter on files written here in the competition's format."""

import pyarrow.parquet as pq
import pytest

from pipelines.data.convert_ijcai18 import COLUMNS, convert, write_sample
from pipelines.data.reading import read_split
from pipelines.data.sources import open_source
from pipelines.data.time_split import time_cuts
from pipelines.data.sources import DataError
from pipelines.data.spec import load_spec

from test_ingest import collect


def test_converts_streaming_into_shards_with_the_papers_domain_key(ray_local, tmp_path):
    raw = tmp_path / "round1_ijcai_18_train.txt"
    write_sample(str(raw), 2500)
    res = convert(str(raw), str(tmp_path / "out"), shard_rows=1000, block_bytes=64 << 10)
    assert res == {"rows": 2500, "files": 3}
    spec = load_spec(tmp_path / "out" / "spec.yaml")
    assert [f.name for f in spec.domain_fields] == ["user_gender_id", "user_age_level", "user_star_level"]
    assert spec.label == "is_trade" and spec.time == "context_timestamp"
    t = pq.read_table(tmp_path / "out" / "part-000000.parquet")
    assert t.num_rows == 1000
    first = t.slice(0, 1).to_pylist()[0]
    assert first["item_category_last"] != "-1" or first["item_category_1"] == "-1"
    assert first["item_property_count"] >= 1
    assert set(t["predict_category_hit"].to_numpy().tolist()) == {0.0, 1.0}
    assert 0 <= min(t["context_hour"].to_pylist()) and max(t["context_hour"].to_pylist()) < 24
    src = open_source(spec)
    cuts = time_cuts(src)
    n = sum(len(collect(read_split(src, s, cuts))["label"]) for s in ("train", "dev", "test"))
    assert n == 2500


def test_list_fields_are_parsed():
    import pyarrow as pa

    from pipelines.data.convert_ijcai18 import transform

    cols = {c: [0, 0] for c in COLUMNS}
    cols.update(
        item_category_list=["1;2;3", "1"],
        item_property_list=["a;b;c;d", ""],
        predict_category_property=["9:x,y;3:-1", "-1"],
        shop_review_positive_rate=[0.5, -1.0], shop_score_service=[0.1, 0.2],
        shop_score_delivery=[0.1, 0.2], shop_score_description=[0.1, 0.2],
        context_timestamp=[1537000000, 1537003600],
    )
    t = transform(pa.RecordBatch.from_pydict(cols))
    assert t["item_category_1"].to_pylist() == ["2", "1"]
    assert t["item_category_last"].to_pylist() == ["3", "1"]
    assert t["predict_category_hit"].to_pylist() == [1.0, 0.0]  # category 3 was predicted
    assert t["item_property_count"].to_pylist()[0] == 4.0


def test_bad_input_files(tmp_path):
    with pytest.raises(DataError, match="nope.txt: no such file"):
        convert(str(tmp_path / "nope.txt"), str(tmp_path / "o"))
    bad = tmp_path / "bad.txt"
    bad.write_text("instance_id item_id\n1 2\n")
    with pytest.raises(DataError, match="bad.txt: column 'item_category_list' is missing"):
        convert(str(bad), str(tmp_path / "o"))


def test_a_dataset_directory_is_replaced_only_when_asked_and_never_half_written(tmp_path, capsys):
    """convert into a directory that holds a conversion is refused (one line, exit 2, nothing
    touched); --overwrite replaces it whole (no old shard stays); a conversion that fails part
    way through an overwrite leaves no spec (the dataset is absent, not mixed)."""
    from pipelines.cli import main

    raw = tmp_path / "raw.txt"
    write_sample(str(raw), 5000)
    out = tmp_path / "out"
    assert convert(str(raw), str(out), shard_rows=1000)["files"] == 5
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    small = tmp_path / "small.txt"
    write_sample(str(small), 1500, seed=1)
    assert main(["convert", "ijcai18", str(small), "--out", str(out), "--shard-rows", "1000"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"adasparse convert: {out}: already holds a dataset (spec.yaml, 5 shards); pass --overwrite to "
                   "replace it, or choose another --out")
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # nothing touched
    assert main(["convert", "ijcai18", str(small), "--out", str(out), "--shard-rows", "1000", "--overwrite"]) == 0
    shards = sorted(p.name for p in out.glob("part-*"))
    assert shards == ["part-000000.parquet", "part-000001.parquet"]
    assert sum(pq.read_table(out / s).num_rows for s in shards) == 1500  # only the new rows
    broken = tmp_path / "broken.txt"
    lines = small.read_text().splitlines()
    broken.write_text("\n".join(lines[:1200] + ["1 2 3"] + lines[1200:]) + "\n")  # a short row, mid-file
    with pytest.raises(DataError, match="broken.txt"):
        convert(str(broken), str(out), shard_rows=1000, block_bytes=16 << 10, overwrite=True)
    assert not (out / "spec.yaml").exists()  # absent, never the old spec over new shards
    with pytest.raises(ValueError, match="spec.yaml: cannot read: No such file"):  # train/summary refuse it
        load_spec(out / "spec.yaml")


def test_shard_rows_must_be_positive(tmp_path, capsys):
    from pipelines.cli import main

    raw = tmp_path / "raw.txt"
    write_sample(str(raw), 10)
    assert main(["convert", "ijcai18", str(raw), "--out", str(tmp_path / "o"), "--shard-rows", "0"]) == 2
    assert capsys.readouterr().err.strip() == "adasparse convert: --shard-rows must be at least 1, got 0"
    assert not (tmp_path / "o").exists()
