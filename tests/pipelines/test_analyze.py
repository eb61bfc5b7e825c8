"""``adasparse analyze``: long-tail bins (Fig. 3 b) and per-domain masks (Fig. 3 a) from run files.

The runs here are written by the in-memory loop in the training job's file layout (no Ray):
metrics.json, vocabulary.json, and a final checkpoint with the model, its config and the merged
test statistics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from adasparse.config import ConfigError, ModelConfig
from adasparse.experiment import synthetic_splits
from adasparse.loop import InMemoryRunner
from adasparse.metrics import CTRMetrics
from adasparse.model import build_model
from adasparse.optim import build_optimizer
from adasparse.synthetic import SyntheticSpec
from pipelines.analysis.analyze import analyze, equal_row_bins, subset_metrics, weighted_jaccard
from pipelines.runtime.run_directory import TEST_METRICS_FILE
from pipelines.train.checkpoints import mask_domains, mask_arrays
from pipelines.cli import main


def test_equal_row_bins_cut_the_head_from_the_tail():
    keys = np.arange(10)
    rows = np.array([50, 20, 10, 5, 5, 4, 3, 1, 1, 1])  # 100 rows
    bins = equal_row_bins(keys, rows, 2)
    assert bins[0].tolist() == [0] and sorted(bins[1].tolist()) == list(range(1, 10))  # the head holds half the rows
    five = equal_row_bins(keys, rows, 5)
    assert sum(len(b) for b in five) == 10 and len(five[0]) < len(five[-1])
    assert sorted(np.concatenate(five).tolist()) == list(range(10))  # every domain in exactly one bin


def test_subset_metrics_are_the_metrics_of_those_domains_alone():
    rng = np.random.default_rng(0)
    dom = rng.integers(0, 6, 3000)
    y = (rng.random(3000) < 0.3).astype(np.float32)
    z = rng.normal(size=3000).astype(np.float32) + y
    whole = CTRMetrics()
    whole.update(dom, y, logits=z)
    part = CTRMetrics()
    keep = np.isin(dom, [1, 4])
    part.update(dom[keep], y[keep], logits=z[keep])
    assert subset_metrics(whole.state(), np.array([1, 4])).compute() == pytest.approx(part.compute())


def _write_run(root, name: str, kind: str, splits, pruner_input: str = "domain"):
    """Train in memory and lay the files out as adasparse train does."""
    torch.manual_seed(0)
    cfg = ModelConfig(kind=kind, features=splits.features, hidden_units=[16, 8], embedding={"dim": 4},
                      pruner={"formulation": "fusion", "input": pruner_input})
    model = build_model(cfg)
    runner = InMemoryRunner(model, build_optimizer(model), {"train": splits.train, "dev": splits.dev, "test": splits.test},
                            epochs=1, batch_size=256)
    runner.fit()
    runner.mask_domains = mask_domains(splits.vocabulary)
    test = runner.evaluate("test")
    run = root / name
    ckpt = run / "checkpoint_final"
    ckpt.mkdir(parents=True)
    torch.save(runner.state_tensors(with_optimizer=False), ckpt / "state.pt")
    (ckpt / "model_config.json").write_text(json.dumps(cfg.model_dump(mode="json")))
    np.savez(ckpt / TEST_METRICS_FILE, **test.domains.state())
    if test.masks is not None:
        np.savez(ckpt / "test_masks.npz", **mask_arrays(test, model))
    (run / "vocabulary.json").write_text(splits.vocabulary.to_json())
    (run / "metrics.json").write_text(json.dumps({"best_checkpoint": str(ckpt), "test": test.metrics,
                                                  "config": {"model": {"kind": kind}}}))
    return run, test, model


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    splits = synthetic_splits(SyntheticSpec(domain_cardinalities=(4, 5, 6), categorical_cardinality=500), 30_000, seed=3)
    return root, [_write_run(root, "dnn", "plain", splits), _write_run(root, "ada-domain", "adasparse", splits),
                  _write_run(root, "ada-instance", "adasparse", splits, "instance")]


def test_analyze_writes_the_long_tail_and_mask_plots(runs, tmp_path, capsys):
    root, made = runs
    out = tmp_path / "analysis"
    assert main(["analyze", *(str(r) for r, _, _ in made), "--out", str(out), "--bins", "3", "--top", "6"]) == 0
    for f in ("long_tail.png", "long_tail.json", "masks.json", "masks_ada-domain.png", "mask_similarity_ada-domain.png"):
        assert (out / f).stat().st_size > 0, f
    assert (out / "long_tail.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tail = json.loads((out / "long_tail.json").read_text())
    assert [b["name"] for b in tail["bins"]] == ["BIN1", "BIN2", "BIN3"]
    assert tail["bins"][0]["domains"] < tail["bins"][-1]["domains"]  # few head domains, many tail ones
    for name, (_, test, _) in zip(("dnn", "ada-domain", "ada-instance"), made):
        r = tail["runs"][name]
        # every test row lies in one bin or in the unseen column
        assert sum(b["rows"] for b in r["bins"]) + r["unseen"]["rows"] == test.metrics["rows"]
    base = tail["runs"]["dnn"]
    # the baseline against itself: 0, or none where its AUC is at most 0.5 (RelaImpr is undefined)
    assert base["rela_impr"] == [0.0 if b["auc"] > 0.5 else None for b in base["bins"]]
    masks = json.loads((out / "masks.json").read_text())
    assert masks["dnn"] == {"skipped": "a plain model has no pruner"}
    for name in ("ada-domain", "ada-instance"):
        m = masks[name]
        assert len(m["domains"]) == 6 and len(m["kept"][0]) == 16 == m["width"]
        assert m["train_rows"] == sorted(m["train_rows"], reverse=True)
        assert all(j == 1.0 for j in np.diag(np.array(m["jaccard"])))
        assert (out / f"masks_{name}.png").stat().st_size > 0
    assert set(np.array(masks["ada-domain"]["kept"]).ravel()) <= {0.0, 1.0}
    assert "BIN1" in capsys.readouterr().out


def test_instance_masks_are_each_domains_mean_of_its_test_rows_masks(runs, tmp_path):
    """In instance mode, a domain's heatmap row is the share of its test rows that keep each
    neuron: checked against the model's own per-row masks, grouped here by domain."""
    root, made = runs
    _, _, model = made[2]
    splits = synthetic_splits(SyntheticSpec(domain_cardinalities=(4, 5, 6), categorical_cardinality=500), 30_000, seed=3)
    result = analyze([str(made[2][0])], str(tmp_path / "a"), top=5, layer=1, log=lambda s: None)["masks"]["ada-instance"]
    test = splits.test
    masks = model.masks(torch.from_numpy(test.cat_ids), torch.from_numpy(test.numeric))[1].numpy()
    vocab = splits.vocabulary
    by_name = {" | ".join(f.values[i - 1] if i else "<oov>" for f, i in zip(vocab.fields, ids)): key
               for key, ids in zip(vocab.train_keys.tolist(), vocab.train_ids.tolist())}
    for name, row in zip(result["domains"], result["kept"]):
        rows = test.domain == by_name[name]
        np.testing.assert_allclose(row, masks[rows].mean(0), atol=1e-12)
    assert 0 < np.mean(result["kept"]) < 1 and result["mode"] == "instance"


def test_weighted_jaccard_is_jaccard_on_binary_masks():
    m = np.array([[1, 1, 0, 0], [1, 0, 1, 0], [0.5, 1, 0, 0]], dtype=float)
    j = weighted_jaccard(m)
    assert j[0, 1] == pytest.approx(1 / 3) and j[0, 2] == pytest.approx(1.5 / 2) and j[1, 1] == 1.0


def test_bad_analyze_input_is_one_line(runs, tmp_path, capsys):
    root, made = runs
    assert main(["analyze", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == f"adasparse analyze: {tmp_path / 'nope'}: not a finished training run (no metrics.json)"
    assert main(["analyze", str(made[1][0]), "--out", str(tmp_path / "o"), "--layer", "7"]) == 2
    assert "--layer 7: the run prunes 2 layers (0..1)" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--bins must be at least 2"):
        analyze([str(made[0][0])], str(tmp_path / "o"), bins=1)


def test_families_average_the_seeds_and_count_each_domains_wins(runs, tmp_path, capsys):
    """Runs named like compare's cells (MODEL-BACKBONE-seedN) are grouped by family: bin AUCs are
    the seeds' mean, RelaImpr is paired by seed, and each domain's family AUC (computed here from
    each run's test statistics one domain at a time) decides the wins and losses per bin."""
    import shutil

    from pipelines.analysis.families import family_of, seed_of

    root, made = runs
    named = {}
    # each family's seeds differ (any run stands in for a seed here), so pairing by seed matters
    for src, dst in (("dnn", "dnn-seed0"), ("ada-domain", "dnn-seed1"), ("ada-instance", "ada-seed0"), ("dnn", "ada-seed1")):
        shutil.copytree(root / src, tmp_path / dst)
        named[dst] = tmp_path / dst
    assert family_of("adasparse-dcnv2-seed12") == "adasparse-dcnv2" and seed_of("adasparse-dcnv2-seed12") == 12
    assert family_of("dnn") == "dnn" and seed_of("dnn") is None
    out = tmp_path / "analysis"
    assert main(["analyze", *(str(p) for p in named.values()), "--out", str(out), "--bins", "3", "--min-test-rows", "40"]) == 0
    result = json.loads((out / "families.json").read_text())
    tail = json.loads((out / "long_tail.json").read_text())["runs"]
    fams = result["bins"]["families"]
    assert list(fams) == ["dnn", "ada"] and result["bins"]["baseline"] == "dnn"
    for b in range(3):
        d0, d1 = tail["dnn-seed0"]["bins"][b]["auc"], tail["dnn-seed1"]["bins"][b]["auc"]
        a0, a1 = tail["ada-seed0"]["bins"][b]["auc"], tail["ada-seed1"]["bins"][b]["auc"]
        assert fams["dnn"]["auc_std"][b] == pytest.approx(abs(d0 - d1) / 2 ** 0.5)
        assert fams["ada"]["auc_mean"][b] == pytest.approx((a0 + a1) / 2)
        impr = [None if base <= 0.5 else (a - 0.5) / (base - 0.5) - 1 for a, base in ((a0, d0), (a1, d1))]  # seed 0 with seed 0
        impr = [v for v in impr if v is not None]
        assert fams["ada"]["rela_impr_mean"][b] == (pytest.approx(sum(impr) / len(impr)) if impr else None)
    table = result["domains"]
    assert table["domains"] and all(d["test_rows"] >= 40 for d in table["domains"])
    states = {n: np.load(named[n] / "checkpoint_final" / TEST_METRICS_FILE) for n in named}
    wins = [0, 0, 0]
    for d in table["domains"]:
        per_run = {n: subset_metrics(dict(s), np.array([d["key"]])).compute()["auc"] for n, s in states.items()}
        assert d["auc"]["ada"] == pytest.approx((per_run["ada-seed0"] + per_run["ada-seed1"]) / 2)
        assert d["auc"]["dnn"] == pytest.approx((per_run["dnn-seed0"] + per_run["dnn-seed1"]) / 2)
        wins[d["bin"] - 1] += d["auc"]["ada"] > d["auc"]["dnn"]
    assert [b["wins"] for b in table["families"]["ada"]["by_bin"]] == wins
    assert table["families"]["dnn"]["wins"] == 0 == table["families"]["dnn"]["losses"]
    printed = capsys.readouterr().out
    assert "# By model family (seeds averaged)" in printed and "| ada | 2 |" in printed
