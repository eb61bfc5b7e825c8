"""Streaming ingest on Ray Data: generator, time split, encoding, bad data mid-stream, Ali-CCP."""

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from adasparse.config import ModelConfig
from adasparse.encoding import EncodedBatch
from adasparse.model import build_model
from adasparse.optim import build_optimizer
from adasparse.errors import find_user_error
from adasparse.loop import InMemoryRunner
from pipelines.train.batching import split_batches
from pipelines.data.reading import read_split
from pipelines.data.sources import open_source
from pipelines.data.time_split import time_cuts
from pipelines.data.sources import DataError
from pipelines.data.spec import load_spec, parse_spec

ALI_CCP = Path(__file__).resolve().parents[3] / "shared" / "data" / "ali-ccp"


def collect(ds, batch_size=1024, **kw) -> dict:
    parts = list(split_batches(ds, batch_size, **kw))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def to_encoded(d: dict) -> EncodedBatch:
    return EncodedBatch(d["cat_ids"], d["numeric"], d["domain"], d["label"])


def test_generator_writes_shards_and_a_loadable_spec(generated):
    files = sorted(p.name for p in generated.glob("part-*.parquet"))
    assert files == [f"part-00000{i}.parquet" for i in range(4)]
    spec = load_spec(generated / "spec.yaml")
    assert [f.name for f in spec.domain_fields] == ["domain_0", "domain_1", "domain_2"]
    t = pq.read_table(generated / "part-000000.parquet")
    assert "domain" not in t.column_names and "group" not in t.column_names  # no latent truth leaks
    assert 0.01 < t["label"].to_numpy().mean() < 0.06


def test_generator_is_deterministic_for_a_seed(generated, tmp_path):
    from pipelines.data.generate import generate

    generate(str(tmp_path), rows=12_000, domains=60, seed=7, chunk_rows=3_000)
    for name in ("part-000002.parquet", "spec.yaml"):
        a, b = generated / name, tmp_path / name
        if name.endswith(".parquet"):
            assert pq.read_table(a).equals(pq.read_table(b))
        else:
            assert a.read_text() == b.read_text()


def test_generator_presets_write_their_fields(ray_local, tmp_path):
    """--preset users adds user_id and item_id (hashed into 2x their cardinality); without
    --domains a preset keeps its own domain fields."""
    import yaml

    from pipelines.data.generate import generate

    res = generate(str(tmp_path / "u"), rows=3000, seed=1, chunk_rows=3000, preset="users")
    spec = yaml.safe_load((tmp_path / "u" / "spec.yaml").read_text())
    buckets = {f["name"]: f["buckets"] for f in spec["categorical_fields"]}
    assert buckets["user_id"] == 200_000 and buckets["item_id"] == 400_000 and res["domains"] == 4000
    t = pq.read_table(tmp_path / "u" / "part-000000.parquet")
    assert {"user_id", "item_id"} <= set(t.column_names)
    assert [f["buckets"] for f in spec["domain_fields"]] == [8, 40, 100]  # the preset's 4 x 20 x 50, not re-cut
    generate(str(tmp_path / "g"), rows=1000, seed=1, chunk_rows=1000, preset="grouped")
    spec = yaml.safe_load((tmp_path / "g" / "spec.yaml").read_text())
    assert [f["buckets"] for f in spec["domain_fields"]] == [8, 12, 16]
    with pytest.raises(ValueError, match="--preset: unknown generator 'nope'"):
        generate(str(tmp_path / "n"), rows=10, preset="nope")


def test_generate_refuses_an_existing_dataset_and_overwrite_replaces_it(ray_local, tmp_path, capsys):
    from pipelines.cli import main
    from pipelines.data.generate import generate

    out = tmp_path / "d"
    generate(str(out), rows=3000, domains=10, chunk_rows=1000)
    assert main(["generate", "--rows", "1000", "--out", str(out)]) == 2  # refused before Ray is asked for anything
    assert capsys.readouterr().err.strip() == (f"adasparse generate: {out}: already holds a dataset (spec.yaml, 3 shards); "
                                               "pass --overwrite to replace it, or choose another --out")
    assert len(list(out.glob("part-*"))) == 3
    generate(str(out), rows=1000, domains=10, chunk_rows=1000, overwrite=True)
    assert [p.name for p in out.glob("part-*")] == ["part-000000.parquet"]  # no old shard left beside the new one
    assert pq.read_table(out / "part-000000.parquet").num_rows == 1000 and (out / "spec.yaml").exists()


@pytest.mark.parametrize("args,message", [
    (["--rows", "0"], "--rows must be at least 1, got 0"),
    (["--rows", "10", "--domains", "0"], "--domains must be at least 1, got 0"),
    (["--rows", "10", "--chunk-rows", "0"], "--chunk-rows must be at least 1, got 0"),
])
def test_generate_options_are_checked_before_ray_starts(tmp_path, capsys, args, message):
    from pipelines.cli import main

    assert main(["generate", *args, "--out", str(tmp_path / "x"), "--address", "ray://nowhere.invalid:1"]) == 2
    assert capsys.readouterr().err.strip() == f"adasparse generate: {message}"
    assert not (tmp_path / "x").exists()


@pytest.mark.fast
def test_time_split_is_4_1_1_and_ordered(generated):
    src = open_source(load_spec(generated / "spec.yaml"))
    cuts = time_cuts(src)
    parts = {s: collect(read_split(src, s, cuts)) for s in ("train", "dev", "test")}
    n = {s: len(p["label"]) for s, p in parts.items()}
    assert sum(n.values()) == 12_000
    assert abs(n["train"] - 8000) <= 5 and abs(n["dev"] - 2000) <= 5
    assert cuts.rows == (n["train"], n["dev"], n["test"])  # counted exactly in the cutting pass
    assert parts["train"]["time"].max() < parts["dev"]["time"].min()
    assert parts["dev"]["time"].max() < parts["test"]["time"].min()
    assert parts["train"]["cat_ids"].shape[1] == 15 and parts["train"]["numeric"].shape[1] == 2


def test_an_empty_split_is_found_when_the_split_is_cut(generated, tmp_path):
    """Times that cannot be cut 4:1:1 (every late row at one timestamp) are refused in the pass
    that cuts the split, before any training, naming the empty split and the counts."""
    import pyarrow as pa
    import yaml

    from pipelines.data.sources import DataError

    t = pq.read_table(generated / "part-000000.parquet")
    time = t["time"].to_numpy().copy()
    time[: len(time) // 10] = 0
    time[len(time) // 10:] = 1  # 10 % at t=0, 90 % at t=1: the train cut swallows t=1, dev and test are empty
    pq.write_table(t.set_column(t.schema.get_field_index("time"), "time", pa.array(time)), tmp_path / "part-000000.parquet")
    spec = load_spec(generated / "spec.yaml").model_dump(mode="json")
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({**spec, "location": "."}))
    with pytest.raises(DataError) as err:
        time_cuts(open_source(load_spec(tmp_path / "spec.yaml")))
    assert str(err.value) == (f"{tmp_path}: the split by time leaves the dev split empty (train {len(time):,} rows, dev 0, "
                              "test 0): column 'time' has too few distinct times for the split 4:1:1")


@pytest.mark.fast
def test_bad_label_mid_stream_names_the_file(ray_local, tmp_path, generated):
    from bad_data import copy_with_bad_label

    src = open_source(copy_with_bad_label(generated, tmp_path, "part-000003.parquet", 5, 3))
    with pytest.raises(Exception) as err:
        collect(read_split(src, "all", None))
    found = find_user_error(err.value)
    assert found is not None
    assert str(found).splitlines()[0] == f"{tmp_path}/part-000003.parquet: column 'label': label not 0 or 1 (3)"


def test_zero_row_shard_streams(ray_local, tmp_path, generated):
    import shutil

    shutil.copy(generated / "part-000000.parquet", tmp_path / "a.parquet")
    t = pq.read_table(generated / "part-000000.parquet")
    pq.write_table(t.slice(0, 0), tmp_path / "b.parquet")
    spec = parse_spec({**load_spec(generated / "spec.yaml").model_dump(), "location": str(tmp_path)})
    assert len(collect(read_split(open_source(spec), "all", None))["label"]) == 3000


@pytest.mark.skipif(not ALI_CCP.exists(), reason="shared/data/ali-ccp is not beside this checkout")
def test_ali_ccp_trains_through_a_spec_alone(ray_local):
    """The real Ali-CCP column layout (CSV, domain column '301', pre-split files) needs only a spec."""
    spec_file = Path(__file__).resolve().parents[2] / "configs" / "data" / "ali_ccp_sample.yaml"
    src = open_source(load_spec(spec_file))
    data = {s: to_encoded(collect(read_split(src, s, None))) for s in ("train", "dev", "test")}
    assert [len(data[s]) for s in ("train", "dev", "test")] == [100, 50, 50]
    assert len(set(data["train"].domain.tolist())) == 3  # the three scenarios
    cfg = ModelConfig(kind="adasparse", features=src.spec.features, hidden_units=[16, 8], embedding={"dim": 4})
    model = build_model(cfg)
    runner = InMemoryRunner(model, build_optimizer(model), data, epochs=2, batch_size=32)
    res = runner.fit()
    test = runner.evaluate("test").metrics
    assert res.best_epoch in (1, 2) and test["rows"] == 50 and 0 < test["logloss"] < 2


def test_summary_counts_domains(generated):
    from pipelines.analysis.domain_summary import domain_summary

    s = domain_summary(open_source(load_spec(generated / "spec.yaml")))
    assert s["rows"] == 12_000 and 1 < s["domains"] <= 60
    assert s["rows_in_top_10pct_domains"] > 0.3  # long-tailed
    assert sum(d["rows"] for d in s["top_domains"]) <= 12_000


def test_early_start_fetches_the_first_batch_in_the_background():
    import threading

    from pipelines.train.batching import EarlyStart

    fetched = threading.Event()
    threads = []

    def batches():
        threads.append(threading.current_thread().name)
        fetched.set()
        yield 1
        threads.append(threading.current_thread().name)
        yield 2
        yield 3

    stream = EarlyStart(batches())
    assert fetched.wait(5)  # before anyone iterates
    assert threads[0].startswith("adasparse-stream-start")
    assert list(stream) == [1, 2, 3]
    assert threads[1] == threading.current_thread().name  # the rest streams in the caller's thread
    assert list(EarlyStart(iter([]))) == []


def test_early_start_raises_the_streams_error_when_iterated():
    from pipelines.train.batching import EarlyStart

    def broken():
        raise DataError("part-0.parquet: column 'label' holds nulls")
        yield  # pragma: no cover

    stream = EarlyStart(broken())
    with pytest.raises(DataError, match="part-0.parquet: column 'label'"):
        list(stream)


class _Stream:
    """A stand-in for a Ray Data iterator: rows 0..n-1 in order, in chunks of the size asked."""

    def __init__(self, n: int):
        self.n, self.asked = n, []

    def iter_batches(self, batch_size, batch_format):
        import pyarrow as pa

        assert batch_format == "pyarrow"
        self.asked.append(batch_size)
        for i in range(0, self.n, batch_size):
            r = np.arange(i, min(i + batch_size, self.n))
            yield pa.table({"time": r, "cat_ids": pa.FixedSizeListArray.from_arrays(np.repeat(r, 2), 2)})


def test_split_batches_have_the_sizes_of_iter_batches_and_keep_order():
    stream = _Stream(12_000)
    parts = list(split_batches(stream, 1024))
    assert stream.asked == [16_384]  # one request of CHUNK_ROWS rows, batched here
    assert [len(p["time"]) for p in parts] == [1024] * 11 + [736]
    assert np.concatenate([p["time"] for p in parts]).tolist() == list(range(12_000))
    assert np.concatenate([p["cat_ids"] for p in parts]).tolist() == [[i, i] for i in range(12_000)]


def test_local_cluster_object_store_is_sized_to_the_ingest_budget(ray_local, monkeypatch):
    """The embedded cluster's store holds one stream budget per CPU (min 2), not 30 % of RAM:
    the store keeps every page it ever wrote resident, so its size bounds a stream's footprint."""
    from pipelines.runtime.ray_env import INGEST_OBJECT_STORE_BUDGET, local_object_store_bytes

    monkeypatch.delenv("ADASPARSE_LOCAL_OBJECT_STORE_BYTES", raising=False)
    assert local_object_store_bytes(2) == 2 * INGEST_OBJECT_STORE_BUDGET
    assert local_object_store_bytes(1) == 2 * INGEST_OBJECT_STORE_BUDGET
    assert local_object_store_bytes(16) == 16 * INGEST_OBJECT_STORE_BUDGET
    monkeypatch.setenv("ADASPARSE_LOCAL_OBJECT_STORE_BYTES", str(300 << 20))
    assert local_object_store_bytes(2) == 300 << 20
    store = ray_local.cluster_resources()["object_store_memory"]
    assert abs(store - 2 * INGEST_OBJECT_STORE_BUDGET) < 2**20
