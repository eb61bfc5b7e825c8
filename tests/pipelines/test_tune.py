"""adasparse tune: search-space validation (one-line errors) and a small sweep end to end."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from adasparse.config import ConfigError
from pipelines.train.job_flags import parse_job_args as parse_args
from pipelines.sweep.tune import concurrency, main
from pipelines.sweep.tune_space import load_space

ROOT = Path(__file__).resolve().parents[2]

GOOD = """name: s
search: optuna
fixed: {model: adasparse}
params:
  beta: {uniform: [1.0, 3.0]}
  sparsity_boundary: {choice: [[0.05, 0.15], [0.15, 0.25]]}
"""


def _space(tmp_path, text: str) -> str:
    p = tmp_path / "space.yaml"
    p.write_text(text)
    return str(p)


def test_shipped_spaces_validate():
    paper = load_space(ROOT / "tune_spaces" / "paper_adasparse.yaml")
    assert paper.search == "optuna" and paper.scheduler is not None
    assert set(paper.params) == {"model.pruner.beta", "model.pruner.epsilon", "sparsity_boundary", "optim.lr", "optim.embedding_lr",
                                 "model.embedding.init_std", "model.pruner.formulation"}
    assert all(load_space(p) for p in (ROOT / "tune_spaces").glob("*.yaml"))  # every shipped space
    defaults = load_space(ROOT / "tune_spaces" / "defaults.yaml")
    assert {"model.embedding.init_std", "model.pruner.alpha_anneal_fraction", "optim.lr", "optim.embedding_lr",
            "model.pruner.sparsity_scope"} <= set(defaults.params)
    fig3d = load_space(ROOT / "tune_spaces" / "sparsity_boundary.yaml")
    assert fig3d.search == "grid" and fig3d.grid_size() == 6
    assert [0.35, 0.4] in [list(p) for p in fig3d.params["sparsity_boundary"].grid]  # the paper's largest tested


def test_every_models_space_searches_the_shared_knobs_over_the_same_ranges():
    """Models compared under one budget search what they share — the learning rates and the
    embedding init σ — over the same ranges (a model with a wider range would get an edge)."""
    shared = ("optim.lr", "optim.embedding_lr", "model.embedding.init_std")
    spaces = {n: load_space(ROOT / "tune_spaces" / f"{n}.yaml") for n in ("paper_adasparse", "defaults", "plain", "star", "apg", "pepnet", "maml")}
    ranges = {n: {k: s.params[k].model_dump(exclude_none=True) for k in shared} for n, s in spaces.items()}
    assert all(r == ranges["paper_adasparse"] for r in ranges.values()), ranges


@pytest.mark.parametrize("edit, message", [
    (("beta: {uniform: [1.0, 3.0]}", "beta: {uniform: [0.5, 3.0]}"),
     "params.beta.uniform[0]: 0.5: Input should be greater than or equal to 1"),
    (("beta: {uniform: [1.0, 3.0]}", "beta: {choice: [2, 0.9]}"),
     "params.beta.choice[1]: 0.9: Input should be greater than or equal to 1"),
    (("beta: {uniform: [1.0, 3.0]}", "epsilon: {loguniform: [0.0, 0.5]}"), "params.epsilon: loguniform range must be positive"),
    (("beta: {uniform: [1.0, 3.0]}", "epsilon: {choice: [0.25, 0]}"),
     "params.epsilon.choice[1]: 0: Input should be greater than 0"),
    (("[0.15, 0.25]", "[0.25, 0.15]"), "params.sparsity_boundary.choice[1]: sparsity boundary [0.25, 0.15] needs 0 <= r_min < r_max <= 0.5"),
    (("[0.15, 0.25]", "[0.3, 0.6]"), "params.sparsity_boundary.choice[1]: sparsity boundary [0.3, 0.6] needs 0 <= r_min < r_max <= 0.5"),
    (("[0.15, 0.25]", "[0.15]"), "params.sparsity_boundary.choice[1]: a sparsity boundary is a pair [r_min, r_max], got [0.15]"),
    (("beta: {uniform: [1.0, 3.0]}", "betta: {uniform: [1.0, 3.0]}"), "params.betta: unknown or untunable parameter"),
    (("beta: {uniform: [1.0, 3.0]}", "r_min: {uniform: [0.1, 0.2]}"),
     "params.r_min: unknown or untunable parameter (tune the pair as sparsity_boundary)"),
    (("beta: {uniform: [1.0, 3.0]}", "workers: {choice: [1, 2]}"), "params.workers: unknown or untunable parameter"),
    (("beta: {uniform: [1.0, 3.0]}", "beta: {uniform: [3.0, 1.0]}"), "params.beta: uniform range [3.0, 1.0] must have low < high"),
    (("beta: {uniform: [1.0, 3.0]}", "beta: {grid: [1.0, 3.0]}"), "grid values need search: grid"),
    (("beta: {uniform: [1.0, 3.0]}", "beta: {uniform: [1, 2], choice: [1]}"), "give exactly one of uniform, loguniform, choice, grid"),
    (("search: optuna", "search: bayes"), "search: Input should be 'optuna', 'random' or 'grid'"),
    (("fixed: {model: adasparse}", "fixed: {model: adasparse, colour: red}"), "fixed.colour: not a run option"),
    (("fixed: {model: adasparse}", "fixed: {model: transformer}"), "fixed: model.kind: Input should be 'plain', 'adasparse', 'star', 'apg', 'pepnet' or 'maml'"),
    (("beta: {uniform: [1.0, 3.0]}", "model.pruner.betta: {uniform: [1.0, 3.0]}"), "params.model.pruner.betta: unknown or untunable parameter"),
    (("beta: {uniform: [1.0, 3.0]}", "beta: {uniform: [1.0, 3.0]}\n  pruner.beta: {choice: [2]}"),
     "params.pruner.beta: the same option as params.beta"),
    (("beta: {uniform: [1.0, 3.0]}", "model.pruner.r_max: {choice: [0.3]}"),
     "params.model.pruner.r_max: unknown or untunable parameter (tune the pair as sparsity_boundary)"),
    (("beta: {uniform: [1.0, 3.0]}", "resources.workers: {choice: [1, 2]}"), "params.resources.workers: unknown or untunable parameter"),
    (("name: s", "nom: s"), "nom: unknown key"),
    (("beta: {uniform: [1.0, 3.0]}", "model.hidden_units: {choice: [[64, 32], [0, 4]]}"),
     "params.model.hidden_units.choice[1]: [0, 4]: model.hidden_units.0: Input should be greater than or equal to 1"),
])
def test_bad_spaces_fail_in_one_line_naming_file_and_key(tmp_path, edit, message):
    old, new = edit
    assert old in GOOD
    path = _space(tmp_path, GOOD.replace(old, new))
    with pytest.raises(ConfigError) as err:
        load_space(path)
    text = str(err.value)
    assert "\n" not in text and text.startswith(path + ": ")
    assert message in text


def test_missing_space_file_and_clashing_flags(tmp_path, capsys):
    assert main(["--space", str(tmp_path / "nope.yaml"), "--data", "d.yaml"]) == 2
    assert "nope.yaml: no such search space file" in capsys.readouterr().err
    path = _space(tmp_path, GOOD)
    assert main(["--space", path, "--data", "d.yaml", "--beta", "2"]) == 2
    assert f"--beta: searched by {path}" in capsys.readouterr().err
    assert main(["--space", path, "--data", "d.yaml", "--r-min", "0.1"]) == 2
    assert "--r-min: searched by" in capsys.readouterr().err


def test_concurrency_follows_the_cluster():
    # budgets exclude the trial function's 0.01 CPU, so one whole CPU stays free for ingest
    assert concurrency({"CPU": 2.0}, workers=2, gpu=False) == (1, 1.99)  # 2 cores: one trial, fractional workers
    assert concurrency({"CPU": 16.0}, workers=3, gpu=False) == (4, 3.99)  # 3 workers + 1 ingest CPU each
    assert concurrency({"CPU": 64.0, "GPU": 8.0}, workers=2, gpu=True) == (4, 15.99)


@pytest.mark.slow
def test_small_sweep_writes_table_best_config_and_plot_then_resumes(generated, tmp_path, capsys):
    space = _space(tmp_path, GOOD.replace("search: optuna", "search: optuna\nscheduler: {grace_period: 1, reduction_factor: 2}"))
    argv = ["--space", space, "--trials", "3", "--data", str(generated / "spec.yaml"), "--epochs", "2",
            "--batch-size", "512", "--hidden-units", "32,16", "--workers", "1", "--out", str(tmp_path / "sweeps"), "--name", "t"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    sweep = tmp_path / "sweeps" / "t"
    rows = list(csv.DictReader(open(sweep / "results.csv")))
    assert len(rows) == 3 and all(1 <= int(r["epochs_run"]) <= 2 for r in rows)
    assert all(1.0 <= float(r["beta"]) <= 3.0 and r["sparsity_boundary"] in ("0.05-0.15", "0.15-0.25") for r in rows)
    best = json.loads((sweep / "best.json").read_text())
    top = max((r for r in rows if r["test_gauc"]), key=lambda r: float(r["best_dev_gauc"]))
    assert best["best_trial"] == top["trial"]
    assert best["best_dev_gauc"] == pytest.approx(float(top["best_dev_gauc"]))
    assert best["test"]["gauc"] == pytest.approx(float(top["test_gauc"]))
    # best.yaml is a run config that adasparse train takes as is, with the winner's parameters
    spec = parse_args(["--config", str(sweep / "best.yaml")])
    lo, hi = (float(x) for x in top["sparsity_boundary"].split("-"))
    p = spec.model.pruner
    assert (p.beta, p.r_min, p.r_max) == (pytest.approx(float(top["beta"])), lo, hi)
    assert (spec.model.kind, spec.train.epochs, spec.model.hidden_units, spec.data) == ("adasparse", 2, [32, 16], str(generated / "spec.yaml"))
    assert (sweep / "sparsity_boundary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"best trial {best['best_trial']}" in out
    # the same command again restores the sweep instead of starting a new one
    assert main(argv) == 0
    assert "resuming the sweep" in capsys.readouterr().out
    assert len(list(csv.DictReader(open(sweep / "results.csv")))) == 3


@pytest.mark.slow
def test_an_interrupted_sweep_resumes_when_rerun(generated, tmp_path, ray_local, capsys):
    """The sweep's driver is killed after its first trial finished; the same command again
    keeps that trial (not retrained), continues the one it interrupted (same parameters, same
    run directory) and draws the rest, one trial at a time as the cluster allows (Ray #40652:
    Tuner.restore started every unfinished trial at once)."""
    import os
    import subprocess
    import sys
    import time

    import psutil

    from pipelines.sweep.trial_records import read_trials

    space = _space(tmp_path, GOOD.replace("search: optuna", "search: random\nscheduler: null"))
    argv = ["--space", space, "--trials", "3", "--data", str(generated / "spec.yaml"), "--epochs", "1",
            "--batch-size", "512", "--hidden-units", "16", "--workers", "1", "--out", str(tmp_path / "sweeps"), "--name", "i"]
    address = ray_local.get_runtime_context().gcs_address  # the first run joins this test session's cluster
    env = {**os.environ, "RAY_ADDRESS": address}
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.sweep.tune", *argv], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=ROOT)
    trials = tmp_path / "sweeps" / "i" / "trials"
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:  # until one trial finished and the next started
            if list(trials.glob("*/metrics.json")) and len(list(trials.glob("*/trial.json"))) >= 2:
                break
            time.sleep(0.5)
    finally:
        tree = [psutil.Process(proc.pid)] + psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
        for p in tree:
            p.kill()
        proc.wait()
    done = list(trials.glob("*/metrics.json"))
    assert len(done) == 1, "the first trial should have finished before the interruption"
    first, stamp = done[0], done[0].stat().st_mtime
    before = read_trials(trials)
    interrupted = [r.name for r in before.values() if r.status == "interrupted"]
    assert len(interrupted) == 1
    assert main(argv) == 0
    assert "trials: 1 done, 1 to continue, 1 to draw" in capsys.readouterr().out
    rows = list(csv.DictReader(open(tmp_path / "sweeps" / "i" / "results.csv")))
    assert len(rows) == 3 and all(r["test_gauc"] for r in rows)
    assert first.stat().st_mtime == stamp  # the finished trial was kept, not trained again
    after = read_trials(trials)
    assert interrupted[0] in after and after[interrupted[0]].status == "finished"  # continued under its own name
    # one at a time: no trial of the rerun started before the one before it ended
    spans = sorted((r.started, (trials / r.name / "metrics.json").stat().st_mtime) for n, r in after.items() if n not in before)
    assert len(spans) == 1
    assert spans[0][0] >= (trials / interrupted[0] / "metrics.json").stat().st_mtime - 1.0


def test_domain_partitions_plot_and_its_space(tmp_path):
    from pipelines.sweep.tune import _domain_partitions

    rows = [{"finished": True, "ingest.domain_fields": ["a"], "train_domains": 4, "test_auc": 0.70, "test_gauc": 0.66},
            {"finished": True, "ingest.domain_fields": ["a", "b"], "train_domains": 120, "test_auc": 0.72, "test_gauc": 0.67},
            {"finished": False, "ingest.domain_fields": ["a", "b", "c"], "train_domains": None, "test_auc": None, "test_gauc": None}]
    _domain_partitions(rows, "ingest.domain_fields", tmp_path)
    assert (tmp_path / "domain_partitions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    points = json.loads((tmp_path / "domain_partitions.json").read_text())
    assert [p["train_domains"] for p in points] == [4, 120] and points[1]["domain_fields"] == ["a", "b"]
    space = load_space(ROOT / "tune_spaces" / "domain_partitions_ijcai18.yaml")
    assert [len(v) for v in space.params["ingest.domain_fields"].grid] == [1, 2, 3, 4]
    bad = _space(tmp_path, "name: p\nsearch: optuna\nparams:\n  ingest.domain_fields: {choice: [[a], [a, b]]}\n")
    with pytest.raises(ConfigError, match="lists of fields need search: grid or random"):
        load_space(bad)
