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
    assert "'star' is not one of the compared models (plain)" in capsys.readouterr().err


def test_each_family_is_tuned_with_its_models_space_under_one_budget(tmp_path):
    from pipelines.sweep.model_tuning import SPACES_DIR, TUNING_SCHEDULER, families, family_space, space_files

    assert [f[0] for f in families(1, ["plain", "star"], ["dnn", "dcnv2"])] == ["plain-dnn", "plain-dcnv2", "star-dnn", "star-dcnv2"]
    t2 = families(2, [], [])
    assert [f[0] for f in t2] == ["adasparse-binarization", "adasparse-scaling", "adasparse-fusion"]
    space = family_space(str(SPACES_DIR / "paper_adasparse.yaml"), "adasparse", t2[0][2])
    assert "model.pruner.formulation" not in space.params  # the family fixes it
    assert space.fixed["model.pruner.formulation"] == "binarization" and space.fixed["model.backbone"] == "dnn"
    assert {"optim.lr", "optim.embedding_lr", "model.embedding.init_std", "model.pruner.beta"} <= set(space.params)
    # whatever a space file says, every family gets the comparison's search and scheduler
    own = tmp_path / "star_random.yaml"
    own.write_text((SPACES_DIR / "star.yaml").read_text().replace("search: optuna", "search: random").replace(
        "reduction_factor: 2", "reduction_factor: 4"))
    star = family_space(str(own), "star", {"model.kind": "star", "model.backbone": "dnn"})
    assert (star.search, star.scheduler) == ("optuna", TUNING_SCHEDULER)
    with pytest.raises(ConfigError, match=r"star_random.yaml: a space for model.kind 'star', not 'apg'"):
        family_space(str(own), "apg", {"model.kind": "apg"})
    files = space_files(["plain", "star"], [f"star={own}"])
    assert files == {"plain": str(SPACES_DIR / "plain.yaml"), "star": str(own)}
    with pytest.raises(ConfigError, match=r"--tune-space apg=x: 'apg' is not one of the compared models \(plain\)"):
        space_files(["plain"], ["apg=x"])


def test_compare_cells_are_named_by_model_backbone_and_seed():
    from pipelines.sweep.compare import compare_cells, family_options

    cells = compare_cells(1, ["plain", "star"], ["dnn"], [0, 1], {"star-dnn": {"optim": {"lr": 0.002}}})
    assert [c["name"] for c in cells] == ["plain-dnn-seed0", "plain-dnn-seed1", "star-dnn-seed0", "star-dnn-seed1"]
    assert cells[2]["params"] == {"model.kind": "star", "model.backbone": "dnn", "train.seed": 0}
    assert [c["extra"] for c in cells] == [{}, {}, {"optim": {"lr": 0.002}}, {"optim": {"lr": 0.002}}]
    # --model-config's options reach every cell of the model (Table 2: every formulation)
    assert family_options(1, {"pepnet": {"optim": {"lr": 0.002}}}, ["dnn", "dcnv2"]) == {
        "pepnet-dnn": {"optim": {"lr": 0.002}}, "pepnet-dcnv2": {"optim": {"lr": 0.002}}}
    assert set(family_options(2, {"adasparse": {}}, ["dnn"])) == {"adasparse-binarization", "adasparse-scaling", "adasparse-fusion"}
    t2 = compare_cells(2, [], [], [0])
    assert [c["name"] for c in t2] == ["adasparse-binarization-seed0", "adasparse-scaling-seed0", "adasparse-fusion-seed0"]


@pytest.mark.slow
def test_a_tuned_comparison_tunes_every_model_then_runs_the_seeds_with_the_winners(generated, tmp_path, capsys):
    argv = ["compare", "--data", str(generated / "spec.yaml"), "--models", "plain,pepnet", "--backbones", "dnn",
            "--seeds", "2", "--tune-trials", "2", "--epochs", "1", "--batch-size", "512", "--hidden-units", "16,8",
            "--workers", "1", "--out", str(tmp_path), "--name", "tuned"]
    assert main(argv) == 0
    out = tmp_path / "tuned"
    tuning = json.loads((out / "tuning.json").read_text())
    assert (tuning["trials"], tuning["epochs"], tuning["search"]) == (2, 1, "optuna")
    fams = {f["family"]: f for f in tuning["families"]}
    assert set(fams) == {"plain-dnn", "pepnet-dnn"} and all(f["trials"] == 2 for f in fams.values())
    assert "model.pepnet.gate_hidden" in fams["pepnet-dnn"]["params"] and "model.pepnet.gate_hidden" not in fams["plain-dnn"]["params"]
    for t in csv.DictReader(open(out / "results.csv")):  # each seed runs with its family's winner
        cfg = json.loads((out / "trials" / t["trial"] / "metrics.json").read_text())["config"]
        won = fams[f"{t['model.kind']}-dnn"]["params"]
        assert t["trial"] == f"{t['model.kind']}-dnn-seed{t['train.seed']}"
        assert (cfg["optim"]["lr"], cfg["model"]["embedding"]["init_std"]) == (won["optim.lr"], won["model.embedding.init_std"])
    rows = json.loads((out / "table.json").read_text())
    assert {(r["model"], r["backbone"]) for r in rows} == {("plain", "dnn"), ("pepnet", "dnn")}
    assert all(r["seeds"] == [0, 1] and 0.3 < r["auc"]["mean"] < 1 for r in rows) and sum(r["gauc"]["best"] for r in rows) == 1
    assert len(list(csv.DictReader(open(out / "table.csv")))) == 2 and "| dnn | pepnet | 2 |" in (out / "table.md").read_text()
    assert "Tuned: Every family: 2 trials" in (out / "table.md").read_text()
    assert "| pepnet-dnn | pepnet.yaml | 2 (" in (out / "tuning.md").read_text()
    # the same command again trains nothing: every tuning trial and every cell is done
    stamps = {p: p.stat().st_mtime for p in out.rglob("metrics.json")}
    capsys.readouterr()
    assert main(argv) == 0
    assert {p: p.stat().st_mtime for p in out.rglob("metrics.json")} == stamps
    text = capsys.readouterr().out
    assert "cells: 4 of 4 done, 0 to run" in text and text.count("trials: 2 done, 0 to continue, 0 to draw") == 2
