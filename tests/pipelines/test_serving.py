"""Serving what a Ray Train run trained: ``adasparse export`` (loaded in a fresh process without
this project) and ``adasparse predict`` (batch scoring on Ray Data)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from pipelines.cli import main
from pipelines.train.job_flags import parse_job_args
from pipelines.serve.predict import predict
from pipelines.runtime.run_directory import RunFiles
from pipelines.serve.shared_model import SharedModel
from pipelines.train.driver import run

from test_s3 import upload


@pytest.fixture(scope="module")
def trained(generated, tmp_path_factory):
    """A domain-mode AdaSparse run (2 workers, 1 epoch) on the shared generated dataset."""
    out = tmp_path_factory.mktemp("serve")
    job = parse_job_args(["--data", str(generated / "spec.yaml"), "--workers", "2", "--epochs", "1", "--batch-size", "256",
                          "--hidden-units", "32,16", "--pruner.input", "domain", "--out", str(out), "--name", "ada"])
    final = run(job, log=lambda s: None)
    return out / "ada", final


FRESH = """
import sys, json
import numpy as np, pyarrow.parquet as pq, pyarrow as pa
sys.modules["adasparse"] = None  # importing this project now fails: the export must not need it
sys.modules["pipelines"] = None
sys.path.insert(0, sys.argv[1])
from adasparse_portable.runtime import load
model = load(sys.argv[1])
table = pa.concat_tables([pq.read_table(f) for f in sys.argv[3:]])
np.save(sys.argv[2], model.predict(table))
"""


def test_an_export_loaded_without_the_project_predicts_raw_rows_as_the_run(trained, generated, tmp_path):
    run_dir, _ = trained
    out = tmp_path / "export"
    assert main(["export", str(run_dir), "--out", str(out), "--check-rows", "2000"]) == 0
    man = json.loads((out / "manifest.json").read_text())
    assert man["layout"] == "pruned" and man["check"]["max_abs_logit_diff"] <= 1e-5
    files = sorted(str(p) for p in generated.glob("*.parquet"))
    got = tmp_path / "p.npy"
    subprocess.run([sys.executable, "-c", FRESH, str(out), str(got), *files], check=True, timeout=300)
    served = np.load(got)
    # the training job's own encoding and model on the same raw rows
    from pipelines.data.encoding import encode_table

    runfiles = RunFiles(run_dir)
    model = runfiles.load_model()
    spec = runfiles.data_spec()
    table = pa.concat_tables([pq.read_table(f) for f in files])
    enc = encode_table(table, spec, runfiles.vocab)
    with torch.no_grad():
        want = torch.sigmoid(model(torch.from_numpy(enc["cat_ids"]), torch.from_numpy(enc["numeric"])).logits).numpy()
    assert served.shape == want.shape == (table.num_rows,)
    assert np.abs(served - want).max() <= 1e-5


@pytest.mark.fast
def test_predict_scores_every_test_row_once_with_the_runs_test_auc(trained, generated, tmp_path, capsys):
    run_dir, final = trained
    out = tmp_path / "pred"
    assert main(["predict", "--run", str(run_dir), "--data", str(generated / "spec.yaml"), "--out", str(out),
                 "--workers", "2", "--batch-size", "1000"]) == 0
    table = pq.read_table(out)
    assert table.num_rows == final["test"]["rows"]
    from adasparse.metrics import CTRMetrics

    m = CTRMetrics()
    m.update(table["domain"].to_numpy(), table["label"].to_numpy(), probs=table["probability"].to_numpy())
    r = m.compute()
    assert r["auc"] == pytest.approx(final["test"]["auc"], abs=1e-6)
    assert r["gauc"] == pytest.approx(final["test"]["gauc"], abs=1e-6)
    assert "AUC" in capsys.readouterr().out
    # the same --out again is refused, untouched
    before = sorted(p.name for p in out.iterdir())
    assert main(["predict", "--run", str(run_dir), "--data", str(generated / "spec.yaml"), "--out", str(out)]) == 2
    assert "not empty; pass --overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == before


def test_predict_capped_below_the_clusters_cpus_writes_the_same_predictions(trained, generated, tmp_path):
    """--workers 1 on 2 CPUs: read, encode and score capped to one task at once, the write apart
    (a plan unlike the default's) — the same rows and probabilities as the uncapped call."""
    run_dir, _ = trained
    outs = {}
    for workers in (None, 1):
        out = tmp_path / f"pred-{workers}"
        res = predict(str(run_dir), str(generated / "spec.yaml"), str(out), split="dev", workers=workers,
                      batch_size=777, log=lambda s: None)
        t = pq.read_table(out).to_pandas().sort_values(["domain", "probability", "label"], ignore_index=True)
        outs[workers] = (res["rows"], t)
    assert outs[None][0] == outs[1][0] == len(outs[1][1]) > 0
    assert outs[None][1].equals(outs[1][1])


def test_predict_reads_and_writes_s3(trained, generated, tmp_path, s3_endpoint, s3_env):
    """Shards on S3 (moto's server on loopback), predictions to S3: the same rows and
    probabilities as from local files to a local directory."""
    import boto3

    from pipelines.data.sources import s3_filesystem
    from pipelines.data.spec import load_spec

    run_dir, _ = trained
    upload(s3_endpoint, generated, "serve", "data")
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket="preds")
    spec = load_spec(generated / "spec.yaml").model_dump(mode="json", exclude_none=True)
    (tmp_path / "s3.yaml").write_text(yaml.safe_dump({**spec, "location": "s3://serve/data",
                                                      "s3": {"endpoint_url": s3_endpoint}}))
    remote = predict(str(run_dir), str(tmp_path / "s3.yaml"), "s3://preds/run1", split="dev",
                     storage_endpoint=s3_endpoint, log=lambda s: None)
    local = predict(str(run_dir), str(generated / "spec.yaml"), str(tmp_path / "local"), split="dev", log=lambda s: None)
    fs = s3_filesystem(s3_endpoint)
    files = [f for f in fs.find("preds/run1") if f.endswith(".parquet")]
    assert files
    got = pa.concat_tables([pq.read_table(fs.open(f, "rb")) for f in files])
    key = ["domain", "probability", "label"]
    want = pq.read_table(tmp_path / "local").to_pandas().sort_values(key, ignore_index=True)
    assert remote["rows"] == local["rows"] == got.num_rows > 0
    assert got.to_pandas().sort_values(key, ignore_index=True).equals(want)
    assert remote["auc"] == pytest.approx(local["auc"], abs=1e-9)


def test_score_block_fetches_a_model_once_per_process_and_never_a_stale_one(trained, generated):
    """The CPU path's per-process cache: the same object → the same scorer; another model (a new
    predict call) → that model's predictions, not the cached one's."""
    import ray

    from pipelines.serve import predict as predict_mod
    from pipelines.data.arrow_columns import columns_to_arrow
    from pipelines.data.encoding import encode_table

    run_dir, _ = trained
    runfiles = RunFiles(run_dir)
    model = runfiles.load_model()
    other = runfiles.load_model()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    files = sorted(generated.glob("*.parquet"))
    enc = encode_table(pq.read_table(files[0]).slice(0, 3000), runfiles.data_spec(), runfiles.vocab)
    block = columns_to_arrow(enc)

    def expected(m):
        with torch.no_grad():
            z = m(torch.from_numpy(enc["cat_ids"]), torch.from_numpy(enc["numeric"])).logits
        return torch.sigmoid(z).numpy()

    predict_mod._SCORERS.clear()
    ref_a, ref_b = ray.put(SharedModel(model)), ray.put(SharedModel(other))
    a1 = predict_mod.score_block(block, ref_a, 1000)
    scorer = predict_mod._SCORERS[ref_a.hex()]
    a2 = predict_mod.score_block(block, ref_a, 1000)
    assert predict_mod._SCORERS[ref_a.hex()] is scorer  # fetched once
    b = predict_mod.score_block(block, ref_b, 1000)
    assert list(predict_mod._SCORERS) == [ref_b.hex()]  # one model kept per process
    np.testing.assert_allclose(a1["probability"].to_numpy(), expected(model), atol=1e-6)
    assert a1.equals(a2)
    np.testing.assert_allclose(b["probability"].to_numpy(), expected(other), atol=1e-6)
    assert np.abs(b["probability"].to_numpy() - a1["probability"].to_numpy()).max() > 1e-3
    predict_mod._SCORERS.clear()


def test_serving_commands_refuse_bad_input_in_one_line(trained, generated, tmp_path, capsys):
    run_dir, _ = trained
    empty = tmp_path / "norun"
    empty.mkdir()
    assert main(["export", str(empty), "--out", str(tmp_path / "e")]) == 2
    assert "not a finished training run" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    spec = (generated / "spec.yaml").read_text().replace("- num_1\n", "").replace("location: .", f"location: {generated}")
    (other / "spec.yaml").write_text(spec)
    assert main(["predict", "--run", str(run_dir), "--data", str(other / "spec.yaml"), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert "numeric fields do not match the run's: 'num_1' is missing" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "p").exists()
