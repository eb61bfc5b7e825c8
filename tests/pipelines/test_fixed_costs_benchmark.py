"""benchmarks/fixed_costs.py: its tables from the runs' own figures, and the checkouts it accepts
(the measurements themselves are printed, not asserted)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _metrics() -> dict:
    """A run's metrics.json as the stage table reads it: 2 epochs of 20 s training."""
    line = {"started": 2.0, "listed": 2.1, "identified": 2.2, "ray_up": 6.0, "checked": 6.5, "split": 7.0,
            "vocabulary": 7.5, "prepared": 7.5, "fit_started": 7.6, "worker_entered": 21.3, "epochs_started": 23.0,
            "epochs_ended": 66.0, "tested": 67.0, "fit_ended": 68.0}
    epoch = {"epoch": 1, "rows_all_workers": 800, "first_batch_s": 0.1, "train_s": 20.0, "dev_eval_s": 1.0,
             "epoch_end_s": 0.5}
    return {"timeline": line, "history": [epoch, {**epoch, "epoch": 2}], "domains": {"train_rows": 800},
            "dev": {"rows": 100}, "test": {"rows": 100}}


@pytest.fixture
def fixed(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    return importlib.import_module("fixed_costs")


def _result(fixed, wall: float, trial_walls: list[float]) -> dict:
    metrics = _metrics()
    train = fixed.training_s(metrics)
    run = {"wall_s": wall, "train_s": train, "ratio": wall / train, "stages": fixed.stages(metrics, wall),
           "test": {"logloss": 0.5, "auc": 0.7, "gauc": 0.65}}
    trials = [{"life_s": w, "fit_s": w - 4.0, "train_s": 5.0, "overhead_s": w - 5.0} for w in trial_walls]
    return {"run": run, "sweep": {"wall_s": sum(trial_walls) + 10, "trials": trials}}


def test_the_tables_put_the_checkouts_side_by_side(fixed, capsys):
    fixed.print_tables({"before": _result(fixed, 80.0, [30.0, 32.0]), "now": _result(fixed, 60.0, [12.0, 14.0])})
    out = capsys.readouterr().out
    assert "| one run | before | now |" in out and "| sweep | before | now |" in out
    assert "| **wall ÷ training** | **2.00** | **1.50** |" in out  # 40 s of training in _metrics
    assert "| **per trial: overhead (s, mean)** | **26.00** | **8.00** |" in out
    assert "| per trial: overhead (s, max) | 27.00 | 9.00 |" in out
    assert "| worker group start | 13.70 | 13.70 |" in out
    assert "| sweep wall ÷ trials, less training (s) | 31.00 | 13.00 |" in out  # (62 + 10) / 2 - 5, (26 + 10) / 2 - 5


def test_a_tree_must_be_a_checkout_of_this_project(fixed, tmp_path):
    with pytest.raises(SystemExit, match="--tree old=.*not LABEL=PATH of a checkout"):
        fixed.main(["--tree", f"old={tmp_path}"])
    with pytest.raises(SystemExit, match="--tree nolabel: not LABEL=PATH"):
        fixed.main(["--tree", "nolabel"])


def test_the_environment_drops_the_poll_interval_and_puts_the_tree_first(fixed, monkeypatch, tmp_path):
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    env = fixed.tree_env(tmp_path)
    assert "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S" not in env
    assert env["PYTHONPATH"].split(":") == [str(tmp_path), "/elsewhere"]
