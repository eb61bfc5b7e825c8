"""benchmarks/scale.py: its stage table from a run's own metrics.json, and the benchmark end to
end on a small generated dataset (its figures are measurements, not asserted)."""

from __future__ import annotations

import importlib
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def scale(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    return importlib.import_module("scale")


def _metrics(checked: bool = True) -> dict:
    line = {"started": 2.0, "listed": 2.5, "identified": 2.6, "ray_up": 6.0, "split": 9.0, "vocabulary": 11.0,
            "prepared": 11.1, "fit_started": 11.3, "worker_entered": 25.0, "epochs_started": 27.0,
            "epochs_ended": 70.0, "tested": 72.0, "fit_ended": 75.0}
    if checked:
        line["checked"] = 7.0
    epoch = {"epoch": 1, "rows_all_workers": 800, "first_batch_s": 0.2, "train_s": 20.0, "dev_eval_s": 1.0,
             "epoch_end_s": 0.5}
    return {"timeline": line, "history": [epoch, {**epoch, "epoch": 2}], "domains": {"train_rows": 800},
            "dev": {"rows": 100}, "test": {"rows": 100}}


def test_the_stages_are_the_runs_own_spans_in_order(scale):
    got = scale.stages(_metrics(), wall=80.0)
    named = {name: (sec, rows) for name, sec, rows in got}
    assert named["listing and footers"] == (0.5, None)
    assert named["validation pass"] == (1.0, 1000)  # every split's rows
    assert named["time split pass"] == (2.0, 1000)
    assert named["domain vocabulary pass"] == (2.0, 800)  # the train split's
    assert named["worker group start"][0] == pytest.approx(13.7)
    assert named["epoch 2: training"] == (20.0, 800) and named["epoch 2: dev evaluation"] == (1.0, 100)
    assert named["results written, Ray down, exit"][0] == 5.0 and named["test evaluation"] == (2.0, 100)
    # the spans tile the run: together they are the command's wall time (the epochs' records
    # fill the epochs' span here; the first batch is inside an epoch's training)
    spans = [sec for name, sec, _ in got if "first batch" not in name]
    assert sum(spans) == pytest.approx(80.0)
    # with the file check off, the split's pass starts when Ray is up
    unchecked = {name: sec for name, sec, _ in scale.stages(_metrics(checked=False), wall=80.0)}
    assert math.isnan(unchecked["validation pass"]) and unchecked["time split pass"] == 3.0


def test_rows_per_second_per_core(scale):
    assert scale.per_core(1000, 2.0, 2) == "250"
    assert scale.per_core(None, 2.0, 2) == "" and scale.per_core(10, float("nan"), 2) == ""


@pytest.mark.ray
@pytest.mark.slow
def test_the_benchmark_prints_every_stage(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "scale.py"), "--rows", "20000", "--dir", str(tmp_path),
           "--batch-size", "512", "--hidden-units", "16"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    for stage in ("listing and footers", "validation pass", "time split pass", "domain vocabulary pass",
                  "worker group start", "epoch 1: training", "test evaluation", "export (s)", "driver peak RSS",
                  "per-worker peak RSS"):
        assert f"| {stage} | " in run.stdout, run.stdout
    assert "adasparse train --workers 1 --epochs 1 --batch-size 512 --hidden-units 16" in run.stdout
