"""The distributed training job end to end on local Ray: 2 data-parallel workers, exact merged metrics."""

import json
import os

import pytest

from adasparse.config import ConfigError
from pipelines.train import model_config, parse_args, run


def test_options_from_flags_and_yaml(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("data: d.yaml\nepochs: 3\nbatch_size: 512\nworkers: 2\n")
    spec = parse_args(["--config", str(cfg), "--batch-size", "1024", "--model", "dnn"])
    assert (spec.epochs, spec.batch_size, spec.workers, spec.model) == (3, 1024, 2, "dnn")
    with pytest.raises(ConfigError, match="options: workers: Input should be greater than or equal to 1"):
        parse_args(["--data", "d.yaml", "--workers", "0"])
    with pytest.raises(ConfigError, match="options: model: Input should be 'dnn' or 'adasparse'"):
        parse_args(["--data", "d.yaml", "--model", "xgboost"])
    with pytest.raises(ConfigError, match=r"^options: r_min \(0.3\) must be below r_max \(0.2\)$"):
        parse_args(["--data", "d.yaml", "--r-min", "0.3", "--r-max", "0.2"])
    with pytest.raises(ConfigError, match="options: beta: Input should be greater than or equal to 1"):
        parse_args(["--data", "d.yaml", "--beta", "0.5"])


def test_pruner_options_reach_the_model_config(features):
    spec = parse_args(["--data", "d.yaml", "--beta", "3", "--epsilon", "0.1", "--r-min", "0.05", "--r-max", "0.1",
                       "--alpha-anneal-steps", "500", "--formulation", "scaling"])
    pruner = model_config(spec, features).pruner
    assert (pruner.beta, pruner.epsilon, pruner.r_min, pruner.r_max, pruner.alpha_anneal_steps, pruner.formulation) == (
        3.0, 0.1, 0.05, 0.1, 500, "scaling")


@pytest.mark.slow
def test_two_workers_train_and_write_metrics(generated, tmp_path):
    spec = parse_args([
        "--data", str(generated / "spec.yaml"), "--workers", "2", "--epochs", "2", "--batch-size", "512",
        "--hidden-units", "32,16", "--out", str(tmp_path), "--name", "t", "--shuffle-buffer", "0",
    ])
    final = run(spec, log=lambda s: None)
    saved = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert saved["test"]["rows"] + saved["dev"]["rows"] == 4000  # dev + test = 2/6 of 12k rows, all counted once
    assert set(saved["test"]) >= {"logloss", "auc", "gauc"} and 0.3 < saved["test"]["auc"] < 1
    assert len(saved["history"]) == 2 and saved["best_epoch"] in (1, 2)
    assert len(saved["sparsity"]["test"]) == 2  # one ratio per pruned hidden layer (32, 16)
    assert sum(d["rows"] for d in saved["test_per_domain"]) == saved["test"]["rows"]
    assert final["best_checkpoint"].startswith(str(tmp_path))
    # 2 workers on the test cluster's one 2-CPU node: the node's CPUs shared, not the 0.5 CPU each reserves
    assert saved["history"][0]["threads"] == max(1, min(2, len(os.sched_getaffinity(0))) // 2)


def test_gpu_requested_without_gpu_fails_fast(generated, tmp_path):
    spec = parse_args(["--data", str(generated / "spec.yaml"), "--gpu", "--out", str(tmp_path)])
    with pytest.raises(ConfigError, match="--gpu: the Ray cluster has no GPU"):
        run(spec)


@pytest.mark.slow
def test_worker_killed_mid_run_restarts_from_checkpoint_and_rerun_resumes(generated, tmp_path):
    args = [
        "--data", str(generated / "spec.yaml"), "--workers", "2", "--epochs", "2", "--batch-size", "1024",
        "--hidden-units", "16", "--out", str(tmp_path), "--name", "ft", "--shuffle-buffer", "0",
    ]
    final = run(parse_args(args + ["--max-failures", "1", "--fail-at-epoch", "1"]), log=lambda s: None)
    assert (tmp_path / "ft" / ".fault_injected").exists()  # a worker really died after epoch 1
    assert [h["epoch"] for h in final["history"]] == [1, 2]  # epoch 1 was not trained twice
    # the same command again: the run is found by name and finishes from its last checkpoint
    again = run(parse_args(args), log=lambda s: None)
    assert again["history"] == final["history"] and again["test"] == final["test"]


def test_worker_threads_share_the_node_cpus_known_to_the_driver():
    """Threads per worker: the node's CPUs (as the driver read them once) over the workers on
    it, capped by the cores the process may use; a node the driver did not see uses the cores."""
    import os

    from pipelines.train import _node_threads

    cores = len(os.sched_getaffinity(0))
    assert _node_threads(1, None) == cores
    assert _node_threads(1, 1.0) == 1
    assert _node_threads(2, 1000.0) == max(1, cores // 2)
    assert _node_threads(4, 0.0) == 1  # never zero threads
