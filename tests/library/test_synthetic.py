"""The generators of adasparse.synthetic: determinism, the optional per-user and item-id effects."""

import numpy as np
import pytest

from adasparse.experiment import synthetic_features
from adasparse.synthetic import PRESETS, SyntheticSpec, SyntheticWorld


@pytest.fixture(scope="module")
def users_rows():
    return SyntheticWorld(PRESETS["users"], 1).chunk(0, 200_000)


def test_a_chunk_is_a_function_of_spec_seed_and_range():
    a = SyntheticWorld(SyntheticSpec(), 3).chunk(500, 2000)
    b = SyntheticWorld(SyntheticSpec(), 3).chunk(500, 2000)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert "user_id" not in a and "item_id" not in a
    c = SyntheticWorld(SyntheticSpec(), 4).chunk(500, 2000)
    assert not np.array_equal(a["label"], c["label"])


def test_users_preset_rows_take_their_users_domain(users_rows):
    users, first = np.unique(users_rows["user_id"], return_index=True)
    domain_of_user = dict(zip(users, users_rows["domain"][first]))
    assert all(domain_of_user[u] == d for u, d in zip(users_rows["user_id"][:5000], users_rows["domain"][:5000]))
    assert users_rows["label"].mean() == pytest.approx(0.03, abs=0.006)  # the calibrated base rate


def test_users_and_items_are_heavy_tailed(users_rows):
    for name, most in (("user_id", 0.005), ("item_id", 0.01)):
        _, counts = np.unique(users_rows[name], return_counts=True)
        counts = np.sort(counts)[::-1]
        assert counts[0] / counts.sum() > most  # a head ...
        assert (counts == 1).mean() > 0.3  # ... and a long tail of ids seen once


def test_per_user_offsets_show_in_the_users_click_rates(users_rows):
    world = SyntheticWorld(PRESETS["users"], 1)
    users, inv, counts = np.unique(users_rows["user_id"], return_inverse=True, return_counts=True)
    ctr = np.bincount(inv, weights=users_rows["label"]) / counts
    busy = counts >= 300
    assert busy.sum() > 20
    assert np.corrcoef(world.user_effect[users[busy]], ctr[busy])[0, 1] > 0.5


def test_features_list_the_id_fields_with_their_buckets():
    feats = synthetic_features(PRESETS["users"])
    buckets = {f.name: f.buckets for f in feats.categorical_fields}
    assert buckets["user_id"] == 200_000 and buckets["item_id"] == 400_000
    assert "user_id" not in {f.name for f in synthetic_features(PRESETS["default"]).categorical_fields}
