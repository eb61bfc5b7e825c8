"""A sweep's trials as files, and what a rerun makes of them (no Ray cluster): names, states,
the grid's cells, Optuna told what is done and handed what to continue."""

from __future__ import annotations

import json
import math

import pytest

from adasparse.config import ConfigError
from pipelines.sweep.trial_records import (CELL, ENDED_FILE, METRICS_FILE, NAME, RESULTS_FILE, TrialLog, cell_name,
                                           error_line, identify, read_trials, sampled_name, write_start)
from pipelines.sweep.tune import SweepPlan, _param_space, _searcher, grid_cells
from pipelines.sweep.tune_space import Domain, TuneSpace


def test_names_identify_a_trial_by_its_parameters():
    a = {"optim.lr": 0.0012345678901234, "model.apg.rank": 8}
    assert sampled_name(a) == sampled_name(dict(reversed(list(a.items()))))  # order does not matter
    assert sampled_name(a) != sampled_name({**a, "model.apg.rank": 16})
    # the name survives a round trip through trial.json (floats are written exactly)
    assert sampled_name(json.loads(json.dumps(a))) == sampled_name(a)
    assert cell_name({"model.kind": "star", "sparsity_boundary": "0.05-0.15", "model.pruner.beta": 2.0}) == \
        "kind=star_sparsity_boundary=0.05-0.15_beta=2"
    assert cell_name({"ingest.domain_fields": ["a", "b/c"]}) == "domain_fields=a-b_c"
    assert cell_name({"x": "y" * 200}).startswith("t")  # too long: a digest
    cell = {"name": "star-dnn-seed0", "params": {"model.kind": "star"}, "extra": {"optim": {"lr": 0.002}}}
    assert identify({CELL: cell}) == ("star-dnn-seed0", {"model.kind": "star"}, {"optim": {"lr": 0.002}})
    assert identify(a) == (sampled_name(a), a, {})


def _trial(d, name, params, results=(), ended=None, metrics=None, started=0.0):
    write_start(d, name, params, {})
    info = json.loads((d / name / "trial.json").read_text())
    info["started"] = started
    (d / name / "trial.json").write_text(json.dumps(info))
    for epoch, g in results:
        with open(d / name / RESULTS_FILE, "a") as fh:
            fh.write(json.dumps({"epoch": epoch, "dev_gauc": g}) + "\n")
    if ended:
        (d / name / ENDED_FILE).write_text(json.dumps(ended))
    if metrics:
        (d / name / METRICS_FILE).write_text(json.dumps(metrics))


def test_read_trials_states_and_figures(tmp_path):
    _trial(tmp_path, "a", {"p": 1}, metrics={"test": {"gauc": 0.6, "auc": 0.7},
                                             "history": [{"epoch": 1, "dev_gauc": 0.55}, {"epoch": 2, "dev_gauc": 0.58}]})
    _trial(tmp_path, "b", {"p": 2}, results=[(1, 0.5)], ended={"status": "stopped"})
    _trial(tmp_path, "c", {"p": 3}, results=[(1, 0.52), (2, 0.51)])  # no end recorded: its driver died
    _trial(tmp_path, "d", {"p": 4}, ended={"status": "error", "error": "ValueError: bad"})
    with open(tmp_path / "c" / RESULTS_FILE, "a") as fh:
        fh.write('{"epoch": 3, "dev_g')  # a line cut short by the kill
    r = read_trials(tmp_path)
    assert {n: x.status for n, x in r.items()} == {"a": "finished", "b": "stopped", "c": "interrupted", "d": "error"}
    assert [n for n, x in r.items() if x.done] == ["a", "b"]
    assert r["a"].best_dev_gauc == 0.58 and r["a"].epochs_run == 2  # from the run's own history
    assert (r["c"].best_dev_gauc, r["c"].last_dev_gauc, r["c"].epochs_run) == (0.52, 0.51, 2)
    assert math.isnan(r["d"].best_dev_gauc) and r["d"].error == "ValueError: bad"
    # the first start's record stays when a trial continues
    write_start(tmp_path, "c", {"p": 99}, {})
    assert read_trials(tmp_path)["c"].params == {"p": 3}


def test_trial_log_records_results_and_ends(tmp_path):
    class Trial:
        config = {"p": 1}

        def get_pickled_error(self):
            return RuntimeError("ray::ImplicitFunc.train()\n  File x\nValueError: data.yaml: column y missing")

        def get_error(self):
            return None

    name = sampled_name(Trial.config)
    write_start(tmp_path, name, Trial.config, {})
    log = TrialLog(tmp_path, "dev_gauc")
    log.on_trial_result(0, [], Trial(), {"epoch": 1, "dev_gauc": 0.6})
    log.on_trial_result(0, [], Trial(), {"done": True})  # a result without an epoch is not one
    log.on_trial_complete(0, [], Trial())
    rec = read_trials(tmp_path)[name]
    assert (rec.status, rec.dev_gauc) == ("stopped", {1: 0.6})  # ended without metrics.json: the scheduler stopped it
    log.on_trial_error(0, [], Trial())
    assert read_trials(tmp_path)[name].error == "ValueError: data.yaml: column y missing"
    assert error_line(None) == "failed"


def _grid(**params) -> TuneSpace:
    return TuneSpace(name="g", search="grid", scheduler=None, params={k: Domain(grid=v) for k, v in params.items()})


def test_grid_cells_and_repeats():
    cells = grid_cells(_grid(**{"sparsity_boundary": [[0.05, 0.15], [0.15, 0.25]], "model.pruner.beta": [2.0]}), 2, seed=7)
    assert [c["name"] for c in cells] == ["sparsity_boundary=0.05-0.15_beta=2", "sparsity_boundary=0.15-0.25_beta=2",
                                          "sparsity_boundary=0.05-0.15_beta=2-r1", "sparsity_boundary=0.15-0.25_beta=2-r1"]
    assert cells[0]["params"] == {"sparsity_boundary": "0.05-0.15", "model.pruner.beta": 2.0} and cells[0]["extra"] == {}
    assert cells[2]["extra"] == {"train": {"seed": 8}}  # a repeat is the grid again with the next seed
    with pytest.raises(ConfigError, match="a grid over train.seed is not repeated"):
        grid_cells(_grid(**{"train.seed": [0, 1]}), 2, seed=0)


def test_a_rerun_continues_interrupted_trials_first_and_tells_optuna_the_done_ones(tmp_path):
    from ray.tune.search import Searcher

    space = TuneSpace(name="s", search="optuna", params={"optim.lr": Domain(loguniform=(1e-4, 1e-2)),
                                                         "model.apg.rank": Domain(choice=[4, 8])})
    _trial(tmp_path, "a", {"optim.lr": 0.001, "model.apg.rank": 4}, metrics={"history": [{"epoch": 1, "dev_gauc": 0.61}]})
    _trial(tmp_path, "b", {"optim.lr": 0.003, "model.apg.rank": 8}, results=[(1, 0.55)], ended={"status": "stopped"})
    _trial(tmp_path, "c", {"optim.lr": 0.0002, "model.apg.rank": 8}, results=[(1, 0.5)])
    r = read_trials(tmp_path)
    done, again = [x for x in r.values() if x.done], [x for x in r.values() if not x.done]
    searcher = _searcher(space, 3, _param_space(space), done, again, {"a", "b", "c"})
    study = searcher.inner._ot_study
    told = sorted((t.params["optim.lr"], t.value) for t in study.trials if t.state.name == "COMPLETE")
    assert told == [(0.001, 0.61), (0.003, 0.55)]
    first = searcher.suggest("x1")
    assert first == {"optim.lr": 0.0002, "model.apg.rank": 8, NAME: "c"}  # the interrupted trial: its parameters, its name
    assert identify(first) == ("c", r["c"].params, {})
    second = searcher.suggest("x2")
    assert second[NAME] == sampled_name({k: v for k, v in second.items() if k != NAME})
    assert {k: v for k, v in second.items() if k != NAME} not in ({"optim.lr": 0.001, "model.apg.rank": 4}, r["c"].params)
    assert isinstance(searcher, Searcher)  # Tune limits a Searcher's concurrency (not a variant generator's)
    plan = SweepPlan(done=done, again=again, draws=2, total=5)
    assert plan.runs == 3 and plan.describe() == "trials: 2 done, 1 to continue, 2 to draw"
    assert SweepPlan(todo=[{}], total=4).describe() == "cells: 3 of 4 done, 1 to run"


def test_a_sweep_of_an_earlier_version_is_refused(generated, tmp_path):
    from pipelines.sweep.tune import sweep
    from pipelines.train.job_config import job_config

    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "tuner.pkl").write_bytes(b"x")
    base = job_config({"data": str(generated / "spec.yaml")})
    with pytest.raises(ConfigError, match=r"s: a sweep of an earlier version \(Tune's own state in tuner.pkl\)"):
        sweep(_grid(**{"model.pruner.beta": [2.0]}), base, 1, str(tmp_path), "s")


def test_random_draws_of_the_same_parameters_get_names_of_their_own():
    """A small choice space draws the same parameters twice: two trials, two run directories
    (the digest, then -2), and a name the sweep already has is not given again."""
    from ray.tune.search import Searcher

    space = TuneSpace(name="s", search="random", params={"model.pruner.beta": Domain(choice=[2.0])})
    searcher = _searcher(space, 0, _param_space(space), [], [], {sampled_name({"model.pruner.beta": 2.0})})
    assert isinstance(searcher, Searcher)
    names = [searcher.suggest(f"x{i}")[NAME] for i in range(2)]
    base = sampled_name({"model.pruner.beta": 2.0})
    assert names == [f"{base}-2", f"{base}-3"]
