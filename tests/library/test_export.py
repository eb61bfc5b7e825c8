"""Exported models (adasparse.export, adasparse.portable.runtime): every kind scores as the
trained model does, domain-mode AdaSparse as physically pruned per-domain sub-networks."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from adasparse.config import ConfigError, ModelConfig
from adasparse.experiment import synthetic_splits
from adasparse.export import check_rows_for, layout_of, write_export
from adasparse.loop import InMemoryRunner
from adasparse.model import build_model
from adasparse.optim import build_optimizer
from adasparse.portable.runtime import load
from adasparse.synthetic import SyntheticSpec

KINDS = {
    "domain-dnn": dict(kind="adasparse", backbone="dnn", pruner={"input": "domain"}),
    "domain-input-dcnv2": dict(kind="adasparse", backbone="dcnv2", pruner={"input": "domain", "prune_input": True}),
    "binarization-dnn": dict(kind="adasparse", backbone="dnn", pruner={"input": "domain", "formulation": "binarization"}),
    "instance-dnn": dict(kind="adasparse", backbone="dnn", pruner={"input": "instance"}),
    "plain-dcnv2": dict(kind="plain", backbone="dcnv2"),
    "star-dnn": dict(kind="star", backbone="dnn"),
    "apg-dcnv2": dict(kind="apg", backbone="dcnv2"),
    "pepnet-dnn": dict(kind="pepnet", backbone="dnn"),
    "maml-dcnv2": dict(kind="maml", backbone="dcnv2"),
}


@pytest.fixture(scope="module")
def splits():
    return synthetic_splits(SyntheticSpec(domain_cardinalities=(4, 5, 6), categorical_cardinality=300), 9_000, seed=5)


def _trained(splits, **cfg) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(ModelConfig(features=splits.features, hidden_units=[16, 8], embedding={"dim": 4}, **cfg),
                        splits.vocabulary)
    InMemoryRunner(model, build_optimizer(model), {"train": splits.train, "dev": splits.dev, "test": splits.test},
                   epochs=1, batch_size=256).fit()
    return model.eval()


@pytest.fixture(scope="module")
def exported(splits, tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    out = {}
    for name, cfg in KINDS.items():
        model = _trained(splits, **cfg)
        man = write_export(model, splits.vocabulary, root / name, missing_values=[-1, ""], source={"run": name})
        out[name] = (model, man, root / name)
    return out


@pytest.mark.parametrize("name", list(KINDS))
def test_an_export_scores_every_domain_as_the_trained_model(exported, splits, name):
    model, man, path = exported[name]
    assert man["layout"] == ("pruned" if name.startswith(("domain", "binarization")) else "whole") == layout_of(model)
    assert man["check"]["max_abs_logit_diff"] <= 1e-5
    served = load(path)
    cat, num = check_rows_for(model, splits.vocabulary, 3_000, seed=11)  # other rows than the export's own check
    with torch.no_grad():
        want = model(torch.from_numpy(cat), torch.from_numpy(num)).logits.numpy()  # ≥ 1024 rows: de-duplicated path
        small = model(torch.from_numpy(cat[:7]), torch.from_numpy(num[:7])).logits.numpy()
    assert np.abs(served.logits_of_ids(cat, num) - want).max() <= 1e-5
    assert np.abs(served.logits_of_ids(cat[:7], num[:7]) - small).max() <= 1e-5
    one = served.logits_of_ids(cat[:1], num[:1])  # a request of one row
    assert one.shape == (1,) and abs(float(one[0]) - float(small[0])) <= 1e-5


def _unseen_tuple(vocab) -> np.ndarray:
    sizes = [f.size for f in vocab.fields]
    for ids in np.ndindex(*sizes):
        if any(ids) and not vocab.seen_in_train(vocab.keys(np.array([ids])))[0]:
            return np.array(ids)
    raise AssertionError("every domain tuple was seen in train")


def test_pruned_sub_networks_hold_only_kept_neurons_and_unrouted_domains_fall_back(exported, splits, tmp_path):
    model = copy.deepcopy(exported["domain-dnn"][0])
    with torch.no_grad():  # neurons 0-5 of the first layer pruned everywhere, 6-9 kept by some domains only
        model.pruner.domain_proj.bias[:6] = -50.0
        model.pruner.domain_proj.weight[6:10] *= 40.0
    man = write_export(model, splits.vocabulary, tmp_path / "e", missing_values=[-1])
    served = load(tmp_path / "e")
    router = served.router
    vocab = splits.vocabulary
    ids = vocab.train_ids
    masks = model.domain_masks(torch.from_numpy(ids))
    assert len({tuple(m) for m in masks[0].tolist()}) > 1  # the domains' masks differ
    group, _ = router.route(vocab.keys(ids))
    for d in range(len(ids)):
        weights, _ = router.subnetwork(int(group[d]))
        kept = [int(m[d].sum()) for m in masks]
        assert kept[0] <= 10
        # hidden layer l: W (kept_l, kept_{l-1}), the logit layer reads the last layer's kept neurons
        assert [tuple(w.shape) for w in weights[0:4:2]] == [(kept[0], model.embedding.output_dim), (kept[1], kept[0])]
        assert weights[-2].shape == (1, kept[-1])
    assert man["pruned"]["masks"] == len(np.unique(router.t["masks"].numpy(), axis=0)) < len(ids)  # each mask once
    # an unseen combination of known values is not routed: the masked network with its pruner serves it
    unseen = _unseen_tuple(vocab)
    cat, num = check_rows_for(model, vocab, 50, seed=3)
    cat[:, : len(unseen)] = unseen
    assert (router.route(vocab.keys(cat[:, : len(unseen)]))[0] == -1).all()
    with torch.no_grad():
        want = model(torch.from_numpy(cat), torch.from_numpy(num)).logits.numpy()
    assert np.abs(served.logits_of_ids(cat, num) - want).max() <= 1e-5
    # every way the router runs a batch gives the model's logits: one sub-network; few sub-networks
    # with many rows each (grouped); many with few rows each (the whole network with stored factors)
    for domains in ([vocab.train_ids[0]], [vocab.train_ids[0], unseen], [vocab.train_ids[0], vocab.train_ids[-1]],
                    list(vocab.train_ids[:20]) + [unseen]):
        cat, num = check_rows_for(model, vocab, 300, seed=4)
        cat = cat[-300:]
        num = num[-300:]
        cat[:, : len(unseen)] = np.asarray(domains)[np.arange(300) % len(domains)]
        with torch.no_grad():
            want = model(torch.from_numpy(cat), torch.from_numpy(num)).logits.numpy()
        assert np.abs(served.logits_of_ids(cat, num) - want).max() <= 1e-5


def test_a_layer_pruned_to_nothing_exports_exactly(splits, tmp_path):
    model = _trained(splits, kind="adasparse", backbone="dcnv2", pruner={"input": "domain"})
    with torch.no_grad():  # one neuron of the first pruned layer kept, none of the second, for every domain
        w = model.pruner.widths
        model.pruner.domain_proj.bias[:] = -50.0
        model.pruner.domain_proj.bias[0] = 50.0
    kept = [int(m.sum(1).max()) for m in model.domain_masks(torch.from_numpy(splits.vocabulary.train_ids))]
    assert kept == [1, 0] and len(w) == 2
    man = write_export(model, splits.vocabulary, tmp_path / "e", missing_values=[-1])
    assert man["check"]["max_abs_logit_diff"] <= 1e-5


def test_an_export_directory_is_replaced_only_by_the_same_run_or_with_overwrite(exported, splits, tmp_path):
    model, _, _ = exported["plain-dcnv2"]
    out = tmp_path / "e"
    write_export(model, splits.vocabulary, out, missing_values=[-1], source={"run": "a"}, check_rows=100)
    before = (out / "model.pt2").read_bytes()
    with pytest.raises(ConfigError, match="holds the export of .*--overwrite"):
        write_export(model, splits.vocabulary, out, missing_values=[-1], source={"run": "b", "checkpoint": "b"}, check_rows=100)
    assert (out / "model.pt2").read_bytes() == before and json.loads((out / "manifest.json").read_text())["source"] == {"run": "a"}
    write_export(model, splits.vocabulary, out, missing_values=[-1], source={"run": "a"}, check_rows=100)  # same run: replaced
    write_export(model, splits.vocabulary, out, missing_values=[-1], source={"run": "b"}, overwrite=True, check_rows=100)
    assert json.loads((out / "manifest.json").read_text())["source"] == {"run": "b"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e"]  # no temporary directory left
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty and not an exported model"):
        write_export(model, splits.vocabulary, other, missing_values=[-1])
    assert (other / "notes.txt").read_text() == "mine"
