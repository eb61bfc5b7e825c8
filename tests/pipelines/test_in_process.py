"""A one-worker run trained in the process that runs it (``resources.trainer: in_process``,
pipelines/train/session.py): who runs a run, the same figures as Ray Train's worker, its
checkpoints in Ray Train's layout (kept, resumed, a copy cut short), a run that changes trainer
between its attempts, the passes read in process, and a run killed mid-epoch that goes on."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adasparse.config import ConfigError, validate
from pipelines.train.job_config import JobConfig
from pipelines.train.job_flags import parse_job_args

ROOT = Path(__file__).resolve().parents[2]


def _job(**sections) -> JobConfig:
    return validate(JobConfig, {"data": "spec.yaml", **sections}, "test")


@pytest.mark.parametrize("sections, ray_up, in_trial, env, small, want", [
    ({}, False, False, {}, True, "in_process"),  # one worker, a private local Ray: in process
    ({"train": {"epochs": 1}}, False, False, {}, False, "ray_train"),  # > 1M rows: the driver stays apart
    ({}, False, False, {"RAY_ADDRESS": "10.0.0.1:6379"}, True, "ray_train"),  # ray job submit: Ray Train places the worker
    ({"resources": {"address": "10.0.0.1:6379"}}, False, False, {}, True, "ray_train"),
    ({}, True, False, {}, True, "ray_train"),  # a process already on a Ray cluster
    ({}, True, True, {}, True, "in_process"),  # a sweep's trial: Tune placed it with the worker's resources
    ({"resources": {"workers": 2}}, False, True, {}, True, "ray_train"),
    ({"faults": {"max_failures": 1}}, False, True, {}, True, "ray_train"),  # recovering a worker needs Ray Train
    ({"faults": {"fail_at_epoch": 1}}, False, False, {}, True, "ray_train"),
    ({"model": {"embedding": {"sharding": "table_wise"}}}, False, False, {}, True, "ray_train"),
    ({"resources": {"trainer": "ray_train"}}, False, False, {}, True, "ray_train"),
    ({"resources": {"trainer": "in_process", "address": "10.0.0.1:6379"}}, True, False, {}, True, "in_process"),
])
def test_auto_trains_one_worker_in_process_where_its_process_is_placed(monkeypatch, sections, ray_up, in_trial, env, small,
                                                                      want):
    from pipelines.train import driver

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(driver, "ray_is_up", lambda: ray_up)
    assert driver.trainer_kind(_job(**sections), in_trial=in_trial, small=small) == want


@pytest.mark.parametrize("sections, says", [
    ({"resources": {"workers": 2}}, "resources.workers is not 1"),
    ({"faults": {"max_failures": 1}}, "faults.max_failures > 0 needs Ray Train"),
    ({"faults": {"fail_at_epoch": 2}}, "faults.fail_at_epoch injects a worker failure"),
    ({"model": {"embedding": {"sharding": "table_wise"}}}, "model.embedding.sharding needs a process group"),
])
def test_in_process_refuses_what_it_cannot_do_in_one_line(sections, says):
    from pipelines.train.driver import trainer_kind

    sections.setdefault("resources", {})["trainer"] = "in_process"
    with pytest.raises(ConfigError, match="resources.trainer in_process: " + says) as err:
        trainer_kind(_job(**sections))
    assert "\n" not in str(err.value)


def _args(data: Path, out: Path, name: str, *extra: str) -> list[str]:
    return ["--data", str(data / "spec.yaml"), "--epochs", "2", "--batch-size", "256", "--hidden-units", "32,16",
            "--workers", "1", "--out", str(out), "--name", name, *extra]


def _per_epoch(m: dict) -> list[tuple]:
    return [(h["epoch"], h["rows"], h["train_loss"], h["dev_logloss"], h["dev_auc"], h["dev_gauc"]) for h in m["history"]]


def _close(a, b, tol: float = 1e-6) -> bool:
    return all(x == y if isinstance(x, int) else abs(x - y) <= tol for x, y in zip(a, b))


def test_the_run_trained_in_process_is_the_ray_train_workers_run(generated, tmp_path):
    """The same options and seed: every epoch's rows, loss and dev figures and the test figures
    equal the Ray Train run's (the loop is one; only who persists and reports differs)."""
    from pipelines.train.driver import run

    here = run(parse_job_args(_args(generated, tmp_path, "here", "--resources.trainer", "in_process")), log=lambda s: None)
    there = run(parse_job_args(_args(generated, tmp_path, "there", "--resources.trainer", "ray_train")), log=lambda s: None)
    assert (here["trainer"], there["trainer"]) == ("in_process", "ray_train")
    assert len(here["history"]) == len(there["history"]) == 2
    for a, b in zip(_per_epoch(here), _per_epoch(there)):
        assert _close(a, b), (a, b)
    for k in ("logloss", "auc", "gauc", "rows"):
        assert abs(here["test"][k] - there["test"][k]) <= 1e-6, k
    for a, b in zip(here["test_per_domain"], there["test_per_domain"], strict=True):
        assert (a["domain"], a["rows"]) == (b["domain"], b["rows"])
        assert (a["auc"] is None) == (b["auc"] is None) and abs((a["auc"] or 0) - (b["auc"] or 0)) <= 1e-6
    assert "worker_entered" in here["timeline"] and here["best_checkpoint"].startswith(str(tmp_path / "here"))


def test_in_process_checkpoints_keep_the_newest_and_a_copy_cut_short_resumes_the_one_before(generated, tmp_path):
    """Ray Train's layout: ``checkpoint_<time>`` directories, the newest ``keep_checkpoints``
    kept, the last holding the final figures; a rerun of the finished run trains nothing. With
    the newest copy cut short (no ``meta.json``: it is copied last) the rerun goes on from the
    one before it and ends with the same figures."""
    from pipelines.train.driver import run

    args = _args(generated, tmp_path, "r", "--resources.trainer", "in_process", "--epochs", "3")
    first = run(parse_job_args(args), log=lambda s: None)
    dirs = sorted(p for p in (tmp_path / "r").glob("checkpoint_*") if p.is_dir())
    assert len(dirs) == 2  # 3 epochs + the final report, the newest 2 kept
    assert (dirs[-1] / "final.json").exists() and not (dirs[0] / "final.json").exists()
    assert Path(first["best_checkpoint"]) == dirs[-1]
    assert not (tmp_path / "r" / "checkpoint_manager_snapshot.json").exists()

    again = run(parse_job_args(args), log=lambda s: None)
    assert again["history"] == first["history"] and again["test"] == first["test"]

    (dirs[-1] / "meta.json").unlink()  # the final checkpoint's copy cut short before its last file
    said: list[str] = []
    cut = run(parse_job_args(args), log=said.append)
    assert _per_epoch(cut) == _per_epoch(first)  # nothing trained again: the epoch-3 checkpoint holds all 3 epochs
    assert abs(cut["test"]["gauc"] - first["test"]["gauc"]) <= 1e-9

    # a run killed while its first checkpoint was being copied: that copy is no checkpoint, the rerun starts afresh
    for d in (tmp_path / "r").glob("checkpoint_*"):
        shutil.rmtree(d)
    (tmp_path / "r" / "checkpoint_2000-01-01_00-00-00.000000").mkdir()
    (tmp_path / "r" / "checkpoint_2000-01-01_00-00-00.000000" / "state.pt").write_bytes(b"PK\x03")  # cut short
    (tmp_path / "r" / "metrics.json").unlink()
    fresh = run(parse_job_args(args), log=lambda s: None)
    assert _per_epoch(fresh) == _per_epoch(first) and fresh["restarts"] == []


def test_a_run_changes_trainer_between_its_attempts(generated, tmp_path):
    """A run stopped after its epoch-2 checkpoint (its final one removed) goes on for epoch 3 on
    Ray Train's worker, which finds the in-process checkpoints without a list of its own; stopped
    so again, it goes on for epoch 4 in process (Ray's list, now stale, removed): no epoch trained
    twice, each attempt's epochs kept, each rerun recorded."""

    from pipelines.train.driver import run

    run_dir = tmp_path / "r"

    def attempt(trainer: str, epochs: int) -> dict:
        return run(parse_job_args(_args(generated, tmp_path, "r", "--resources.trainer", trainer, "--epochs", str(epochs))),
                   log=lambda s: None)

    def stop_before_the_end(m: dict) -> None:  # as if the attempt had died after its last epoch's checkpoint
        shutil.rmtree(m["best_checkpoint"])
        (run_dir / "metrics.json").unlink()

    one = attempt("in_process", 2)
    stop_before_the_end(one)
    two = attempt("ray_train", 3)
    assert two["trainer"] == "ray_train" and _per_epoch(two)[:2] == _per_epoch(one)
    assert [(r["kind"], r["from_epoch"]) for r in two["restarts"]] == [("rerun", 3)]
    assert (run_dir / "checkpoint_manager_snapshot.json").exists()
    stop_before_the_end(two)
    three = attempt("in_process", 4)
    assert _per_epoch(three)[:3] == _per_epoch(two) and [h["epoch"] for h in three["history"]] == [1, 2, 3, 4]
    assert [(r["kind"], r["from_epoch"]) for r in three["restarts"]] == [("rerun", 3), ("rerun", 4)]
    assert not (run_dir / "checkpoint_manager_snapshot.json").exists()


def test_the_passes_read_in_process_equal_ray_datas(generated, monkeypatch):
    """A small dataset's split cuts and domain vocabulary read in this process are those of
    the Ray Data pipelines a large one uses."""
    from pipelines.data import inline_read
    from pipelines.data.sources import open_source
    from pipelines.data.spec import load_spec
    from pipelines.data.time_split import time_cuts
    from pipelines.data.vocabulary_pass import build_vocabulary

    source = open_source(load_spec(str(generated / "spec.yaml")))
    assert inline_read.reads_inline(source)
    here = time_cuts(source), build_vocabulary(source, time_cuts(source)).to_json()
    monkeypatch.setattr(inline_read, "INLINE_ROWS", 0)
    assert not inline_read.reads_inline(source)
    there = time_cuts(source), build_vocabulary(source, time_cuts(source)).to_json()
    assert here[0] == there[0]
    assert json.loads(here[1]) == json.loads(there[1])


def test_a_sweep_resolves_who_trains_once_for_its_data(generated, monkeypatch):
    """Every trial of a sweep trains as the sweep decided for its data: in process on a small
    dataset (the trial reserves the worker's CPUs and Tune reuses its process), on Ray Train
    beyond :data:`pipelines.data.inline_read.INLINE_ROWS` rows (the trial reserves 0.01 CPU)."""
    from pipelines.data import inline_read
    from pipelines.data.sources import open_source
    from pipelines.data.spec import load_spec
    from pipelines.sweep.tune import TRIAL_CPU, trial_base, trial_resources

    base = parse_job_args(_args(generated, Path("/tmp"), "s"))
    source = open_source(load_spec(str(generated / "spec.yaml")))
    small = trial_base(base, source)
    assert small.resources.trainer == "in_process" and base.resources.trainer == "auto"
    assert trial_resources(small, 1.99) == {"CPU": 0.99}
    monkeypatch.setattr(inline_read, "INLINE_ROWS", 0)
    large = trial_base(base, source)
    assert large.resources.trainer == "ray_train" and trial_resources(large, 1.99) == {"CPU": TRIAL_CPU}


def _newest_mid_epoch(run_dir: Path) -> tuple[int, int]:
    """(epoch, update) of the newest complete mid-epoch checkpoint (its meta.json written), else (0, 0)."""
    for d in sorted((p for p in run_dir.glob("checkpoint_*") if p.is_dir()), reverse=True):
        try:
            progress = json.loads((d / "meta.json").read_text()).get("in_progress")
        except (OSError, ValueError):
            continue
        return (progress["epoch"], progress["steps"]) if progress else (0, 0)
    return 0, 0


@pytest.mark.slow
@pytest.mark.processes
def test_a_run_trained_in_process_killed_mid_epoch_goes_on_from_its_mid_epoch_checkpoint(generated, tmp_path):
    """``adasparse train`` (one worker, its own process: no Ray started) SIGKILLed inside epoch 2
    after a mid-epoch checkpoint; the same command again goes on from it and ends as the
    uninterrupted run: every epoch's rows and dev figures, the test figures."""
    from pipelines.cli import main

    common = ["--epochs", "3", "--batch-size", "32", "--faults.checkpoint_every_steps", "50", "--resources.trainer", "in_process"]
    assert main(["train", *_args(generated, tmp_path, "whole", *common)]) == 0
    want = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert want["trainer"] == "in_process"

    args = ["train", *_args(generated, tmp_path, "killed", *common)]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while _newest_mid_epoch(tmp_path / "killed") < (2, 100):
            assert proc.poll() is None and time.time() < deadline, "no mid-epoch checkpoint of epoch 2"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert main(args) == 0
    got = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert [(r["kind"], r["from_epoch"]) for r in got["restarts"]] == [("rerun", 2)]
    assert [r["from_step"] for r in got["restarts"]][0] >= 100
    assert [h["rows"] for h in got["history"]] == [h["rows"] for h in want["history"]]  # every row once per epoch
    for a, b in zip(_per_epoch(got), _per_epoch(want)):
        assert _close(a, b, 1e-3), (a, b)
    assert abs(got["test"]["gauc"] - want["test"]["gauc"]) <= 1e-3
