"""AdaSparse learns what the plain DNN struggles with: two groups of domains that depend on
different features. It must win on test GAUC and learn visibly different masks per group."""

import numpy as np
import pytest
import torch

from adasparse.config import ModelConfig
from adasparse.experiment import run_model, synthetic_splits
from adasparse.portable.hashing import hash_to_buckets
from adasparse.synthetic import SyntheticSpec, SyntheticWorld

# Group 0 domains read fields 0, 2, 4; group 1 domains read fields 1, 3, 5; nothing is shared.
SPEC = SyntheticSpec(
    domain_cardinalities=(2, 4, 5),
    num_categorical=6,
    categorical_cardinality=40,
    num_numeric=0,
    groups=2,
    group_sharpness=20.0,
    domain_zipf=0.3,
    value_zipf=0.5,
    shared_scale=0.0,
    group_scale=3.0,
    domain_bias_std=0.3,
    base_ctr=0.25,
)


@pytest.fixture(scope="module")
def trained():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny layers: one thread is fastest and immune to a busy machine
    try:
        yield _train()
    finally:
        torch.set_num_threads(threads)


def _train():
    splits = synthetic_splits(SPEC, 60_000, seed=0)
    common = dict(features=splits.features, hidden_units=[32, 16], embedding={"dim": 8, "init_std": 0.1})
    dnn = run_model(ModelConfig(kind="dnn", **common), splits, epochs=4, batch_size=256)
    ada = run_model(
        ModelConfig(kind="adasparse", pruner={"formulation": "binarization", "input": "domain", "alpha_anneal_samples": 102_400}, **common),
        splits,
        epochs=4,
        batch_size=256,
    )
    return splits, dnn, ada


@pytest.mark.slow
def test_adasparse_beats_the_plain_dnn_on_gauc(trained):
    _, dnn, ada = trained
    assert ada["test"]["gauc"] > dnn["test"]["gauc"] + 0.03, (ada["test"], dnn["test"])
    assert ada["test"]["logloss"] < dnn["test"]["logloss"]


@pytest.mark.slow
def test_masks_differ_between_the_two_groups(trained):
    splits, _, ada = trained
    world = SyntheticWorld(SPEC, 0)
    ids = np.stack(
        [hash_to_buckets(world.domain_attrs[:, j], f.name, f.buckets) for j, f in enumerate(splits.features.domain_fields)],
        axis=1,
    )
    group = world.domain_weights.argmax(axis=1)
    assert set(group.tolist()) == {0, 1}
    first = ada["model"].domain_masks(torch.from_numpy(ids))[0].float().numpy()  # the 32-neuron layer
    assert 0.05 < 1 - first.mean() < 0.5  # it prunes, within reason
    hamming = (first[:, None, :] != first[None, :, :]).mean(axis=-1)
    same = group[:, None] == group[None, :]
    assert hamming[~same].mean() > 2 * hamming[same].mean()
    # some neuron is kept for most domains of one group and pruned for most of the other
    assert np.abs(first[group == 0].mean(0) - first[group == 1].mean(0)).max() >= 0.6
