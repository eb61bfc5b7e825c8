"""``adasparse compare``: the table from finished runs (means, spreads, the paired test) and a
small grid run end to end on local Ray."""

from __future__ import annotations

import csv
import json

import pytest

from pipelines.cli import main
from adasparse.config import ConfigError
from pipelines.sweep.compare import comparison_table, compare_space, paired_p_value, tuned_options


def _cells(model, backbone, gaucs, shift=0.0):
    return [{"model": model, "backbone": backbone, "seed": s, "logloss": 0.2 - g / 10, "auc": g + shift, "gauc": g}
            for s, g in enumerate(gaucs)]


def test_table_means_spreads_and_the_paired_mark():
    from scipy import stats

    a = [0.70, 0.71, 0.72, 0.705]
    b = [0.69, 0.70, 0.712, 0.69]  # below a in every seed, by about 0.01
    c = [0.60, 0.61, 0.62, 0.60]
    rows = comparison_table(_cells("adasparse", "dnn", a) + _cells("plain", "dnn", b) + _cells("star", "dnn", c)
                            + _cells("plain", "dcnv2", [0.5, 0.6]) + _cells("adasparse", "dcnv2", [0.55, 0.58]))
    by = {(r["model"], r["backbone"]): r for r in rows}
    ada = by[("adasparse", "dnn")]
    assert ada["gauc"]["mean"] == pytest.approx(sum(a) / 4) and ada["gauc"]["std"] == pytest.approx(stats.tstd(a))
    assert ada["gauc"]["best"] and not by[("plain", "dnn")]["gauc"]["best"]
    assert ada["gauc"]["p"] == pytest.approx(stats.ttest_rel(a, b).pvalue) and ada["gauc"]["significant"]
    assert ada["logloss"]["best"]  # lower is better: 0.2 − GAUC/10
    # dcnv2: the two models swap places between seeds, no significance
    assert by[("plain", "dcnv2")]["gauc"]["best"] is False and by[("adasparse", "dcnv2")]["gauc"]["best"]
    assert not by[("adasparse", "dcnv2")]["gauc"]["significant"]
    assert [r["model"] for r in rows if r["backbone"] == "dnn"] == ["adasparse", "plain", "star"]  # the order given


def test_paired_p_value_edges():
    assert paired_p_value([0.7], [0.6]) is None  # one seed: no test
    assert paired_p_value([0.7, 0.8], [0.6, 0.7]) == 0.0  # the same difference in every seed
    assert paired_p_value([0.7, 0.8], [0.7, 0.8]) == 1.0


def test_grids_of_table_1_and_2():
    t1 = compare_space(1, ["plain", "star"], ["dnn", "dcnv2"], [0, 1, 2])
    assert t1.grid_size() == 12 and t1.scheduler is None
    t2 = compare_space(2, [], [], [0, 1])
    assert t2.grid_size() == 6 and t2.fixed == {"model.kind": "adasparse", "model.backbone": "dnn"}


def test_grid_options_are_refused_as_flags(capsys):
    assert main(["compare", "--data", "x.yaml", "--model", "star"]) == 2
    assert "--model: set by the comparison's grid" in capsys.readouterr().err
    assert main(["compare", "--data", "x.yaml", "--seeds", "0"]) == 2
    assert "--seeds must be at least 1" in capsys.readouterr().err


def _tuned(tmp_path, text: str) -> str:
    path = tmp_path / "best.yaml"
    path.write_text(text)
    return str(path)


def test_a_models_tuned_options_are_its_model_and_optim_sections(tmp_path, capsys):
    path = _tuned(tmp_path, "data: d.yaml\nmodel: {kind: pepnet, backbone: dcnv2, pepnet: {gate_hidden: 8}}\n"
                            "optim: {lr: 0.002}\ntrain: {epochs: 9}\n")
    assert tuned_options("pepnet", path) == {"model": {"pepnet": {"gate_hidden": 8}}, "optim": {"lr": 0.002}}
    with pytest.raises(ConfigError, match="model.kind is 'pepnet', not 'star'"):
        tuned_options("star", path)
    assert main(["compare", "--data", "x.yaml", "--models", "plain", "--model-config", f"star={path}"]) == 2
    assert "'star' is not one of --models (plain)" in capsys.readouterr().err


@pytest.mark.slow
def test_a_small_comparison_writes_its_tables(generated, tmp_path, capsys):
    tuned = _tuned(tmp_path, "model: {kind: pepnet, pepnet: {gate_hidden: 8}}\noptim: {lr: 0.002}\n")
    argv = ["compare", "--data", str(generated / "spec.yaml"), "--models", "plain,pepnet", "--backbones", "dnn",
            "--seeds", "2", "--epochs", "1", "--batch-size", "512", "--hidden-units", "16,8", "--workers", "1",
            "--out", str(tmp_path), "--name", "cmp", "--model-config", f"pepnet={tuned}"]
    assert main(argv) == 0
    out = tmp_path / "cmp"
    rows = json.loads((out / "table.json").read_text())
    assert {(r["model"], r["backbone"]) for r in rows} == {("plain", "dnn"), ("pepnet", "dnn")}
    assert all(r["seeds"] == [0, 1] and 0.3 < r["auc"]["mean"] < 1 for r in rows)
    assert sum(r["gauc"]["best"] for r in rows) == 1
    table = list(csv.DictReader(open(out / "table.csv")))
    assert len(table) == 2 and "| dnn | pepnet | 2 |" in (out / "table.md").read_text()
    # each cell is its own training run, with its own seed
    trials = list(csv.DictReader(open(out / "results.csv")))
    assert len(trials) == 4 and {t["train.seed"] for t in trials} == {"0", "1"}
    for t in trials:  # the tuned options reach the pepnet cells only
        cfg = json.loads((out / "trials" / t["trial"] / "metrics.json").read_text())["config"]
        tuned_cell = t["model.kind"] == "pepnet"
        assert (cfg["model"]["pepnet"]["gate_hidden"], cfg["optim"]["lr"]) == ((8, 0.002) if tuned_cell else (64, 0.001))
    assert "table.md" in capsys.readouterr().out
