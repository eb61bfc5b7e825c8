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

from pipelines.cli import main
from pipelines.job_flags import parse_job_args
from pipelines.run_files import RunFiles
from pipelines.train import run


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
    from pipelines.transforms import encode_table

    runfiles = RunFiles(run_dir)
    model = runfiles.load_model()
    spec = runfiles.data_spec()
    table = pa.concat_tables([pq.read_table(f) for f in files])
    enc = encode_table(table, spec, runfiles.vocab)
    with torch.no_grad():
        want = torch.sigmoid(model(torch.from_numpy(enc["cat_ids"]), torch.from_numpy(enc["numeric"])).logits).numpy()
    assert served.shape == want.shape == (table.num_rows,)
    assert np.abs(served - want).max() <= 1e-5


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
