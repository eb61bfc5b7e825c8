"""The training job with sharded tables (``--embedding.sharding table_wise``, TorchRec) on local Ray:
2 workers each holding their shards only, a worker killed and the run going on from the gathered
checkpoint, the checkpoint a replicated model loads, ``export`` and ``predict`` as any run's."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from adasparse.config import ModelConfig
from adasparse.metrics import CTRMetrics
from adasparse.model import build_model
from pipelines.cli import main
from pipelines.train.driver import run
from pipelines.train.job_flags import parse_job_args

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("kind", ["adasparse", "star"])
def test_sharded_tables_train_restart_export_and_predict(generated, tmp_path, kind):
    name = f"tw-{kind}"
    final = run(parse_job_args([
        "--data", str(generated / "spec.yaml"), "--model", kind, "--workers", "2", "--epochs", "2", "--batch-size", "512",
        "--hidden-units", "16,8", "--embedding.sharding", "table_wise", "--out", str(tmp_path), "--name", name,
        "--max-failures", "1", "--fail-at-epoch", "1"]), log=lambda s: None)
    assert (tmp_path / name / ".fault_injected").exists()  # a worker died after epoch 1: restarted from the gathered tables
    assert [h["epoch"] for h in final["history"]] == [1, 2]
    metrics = json.loads((tmp_path / name / "metrics.json").read_text())
    cfg = ModelConfig.model_validate(metrics["model_config"])
    k = cfg.features.num_domain_fields
    whole = sum(f.buckets for f in cfg.features.all_categorical[k:]) * cfg.embedding.dim * 4
    sharded = metrics["sharded_tables"]
    assert sharded["kind"] == "table_wise" and set(sharded["plan"].values()) == {"table_wise"}
    assert sharded["optimizer"] == "rowwise_adagrad"
    held = sharded["table_bytes_per_worker"]
    assert sum(held) == whole and max(held) < whole  # each worker its own tables only
    # the checkpoint holds whole tables in the replicated layout: a replicated model loads it strictly
    best = Path(metrics["best_checkpoint"])
    saved = ModelConfig.model_validate(json.loads((best / "model_config.json").read_text()))
    assert saved.embedding.sharding == "replicated"
    build_model(saved).load_state_dict(torch.load(best / "state.pt", weights_only=True)["best_model"])
    # export checks itself against the run's model; predict scores the test split to the run's test figures
    assert main(["export", str(tmp_path / name), "--out", str(tmp_path / "export"), "--check-rows", "1000"]) == 0
    man = json.loads((tmp_path / "export" / "manifest.json").read_text())
    assert man["check"]["max_abs_logit_diff"] <= 1e-5
    assert main(["predict", "--run", str(tmp_path / name), "--data", str(generated / "spec.yaml"),
                 "--out", str(tmp_path / "pred")]) == 0
    table = pq.read_table(tmp_path / "pred")
    m = CTRMetrics()
    m.update(table["domain"].to_numpy(), table["label"].to_numpy(), probs=table["probability"].to_numpy())
    assert table.num_rows == final["test"]["rows"]
    assert m.compute()["gauc"] == pytest.approx(final["test"]["gauc"], abs=1e-6)
