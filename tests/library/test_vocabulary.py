"""Exact ids for the domain-aware fields (adasparse.vocabulary)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adasparse.config import ConfigError
from adasparse.portable.hashing import hash_values
from adasparse.vocabulary import OOV, DomainVocabulary
from model_helpers import make_features


def _vocab(min_count=2):
    # field a: x ×5, y ×3, z ×1 (rare); field b: p ×6, q ×3
    a = {v: int(hash_values(np.array([v]), "a")[0]) for v in "xyz"}
    b = {v: int(hash_values(np.array([v]), "b")[0]) for v in "pq"}
    tuples = np.array([[a["x"], b["p"]], [a["x"], b["q"]], [a["y"], b["p"]], [a["z"], b["q"]]], dtype=np.uint64)
    counts = np.array([3, 2, 3, 1])
    values = [{h: v for v, h in a.items()}, {h: v for v, h in b.items()}]
    return DomainVocabulary.build(["a", "b"], tuples, counts, values, min_count=min_count), a, b


def test_ids_by_frequency_with_a_trained_out_of_vocabulary_id():
    vocab, a, b = _vocab()
    fa, fb = vocab.fields
    assert fa.values == ["x", "y"] and fa.counts.tolist() == [5, 3] and fa.oov_train_rows == 1  # z is rare: id 0
    assert fb.values == ["p", "q"] and fb.counts.tolist() == [6, 3] and fb.oov_train_rows == 0
    assert (fa.size, fb.size) == (3, 3)
    unseen = int(hash_values(np.array(["w"]), "a")[0])
    assert fa.lookup(np.array([a["x"], a["y"], a["z"], unseen], np.uint64)).tolist() == [1, 2, OOV, OOV]


def test_domain_keys_are_exact_and_train_domains_counted():
    vocab, a, b = _vocab()
    ids = np.array([[1, 1], [1, 2], [2, 1], [0, 2], [2, 2]])
    keys = vocab.keys(ids)
    assert keys.tolist() == [1 + 3 * 1, 1 + 3 * 2, 2 + 3 * 1, 0 + 3 * 2, 2 + 3 * 2]  # mixed radix over sizes (3, 3)
    assert len(set(keys.tolist())) == len(ids)
    assert vocab.train_tuples == 4 and vocab.distinguished == 4  # (z, q) → (0, 2): still its own domain
    assert vocab.seen_in_train(keys).tolist() == [True, True, True, True, False]  # (y, q) never occurred in train
    merged, _, _ = _vocab(min_count=4)  # y and q rare now: (x,q)→(1,0) and (z,q)→(0,0), (y,p)→(0,1)
    assert merged.distinguished == 4 and merged.fields[0].values == ["x"]
    rarer, _, _ = _vocab(min_count=6)  # only p keeps an id: (x,p),(y,p) → (0,1); (x,q),(z,q) → (0,0)
    assert rarer.train_tuples == 4 and rarer.distinguished == 2


def test_vocabulary_round_trips_and_sizes_the_features():
    vocab, a, _ = _vocab()
    vocab.train_positives = 3
    again = DomainVocabulary.from_json(vocab.to_json())
    assert again.fingerprint() == vocab.fingerprint() and again.train_keys.tolist() == vocab.train_keys.tolist()
    assert again.base_rate == 3 / vocab.train_rows
    assert again.fields[0].lookup(np.array([a["y"]], np.uint64)).tolist() == [2]
    feats = make_features(domain_buckets=(50, 60))
    feats = feats.model_copy(update={"domain_fields": [f.model_copy(update={"name": n}) for f, n in zip(feats.domain_fields, "ab")]})
    sized = vocab.features(feats)
    assert [f.buckets for f in sized.domain_fields] == [3, 3] and sized.categorical_fields == feats.categorical_fields
    with pytest.raises(ConfigError, match=r"fields \['a', 'b'\] do not match the data's \['d0', 'd1'\]"):
        vocab.features(make_features())
    with pytest.raises(ConfigError, match="v.json: not a domain vocabulary"):
        DomainVocabulary.from_json('{"format": 1}', "v.json")


def test_keys_fall_back_to_a_hash_when_the_radix_overflows():
    names = [f"f{i}" for i in range(8)]
    hashes = np.arange(1, 8 * 300_000 + 1, dtype=np.uint64).reshape(-1, 8)  # 300k distinct values per field
    values = [{int(h): str(h) for h in hashes[:, j]} for j in range(8)]
    vocab = DomainVocabulary.build(names, hashes, np.ones(len(hashes), np.int64), values, min_count=1)
    assert vocab._radix is None  # (300k + 1)^8 > 2^63
    assert vocab.distinguished == 300_000  # every tuple still its own key


@pytest.mark.parametrize("kind", ["plain", "adasparse", "star", "apg", "pepnet", "maml"])
def test_every_model_starts_at_the_train_base_rate(kind):
    """logit_bias_init: base_rate sets the logit bias to log(p / (1 - p)) of the vocabulary's
    train click rate; uniform keeps nn.Linear's; a vocabulary without clicks counted leaves it."""
    import math

    from adasparse.config import ModelConfig
    from adasparse.model import build_model

    names = ["d0", "d1"]
    hashes = np.array([[1, 2], [1, 2], [3, 4], [3, 4], [3, 4]] * 4, np.uint64)
    raw = [np.array(["a", "a", "b", "b", "b"] * 4), np.array(["p", "p", "q", "q", "q"] * 4)]
    labels = np.array([1, 0, 0, 0, 0] * 4)
    vocab = DomainVocabulary.from_rows(names, hashes, raw, labels=labels)
    assert vocab.train_positives == 4 and vocab.base_rate == 0.2
    cfg = ModelConfig(kind=kind, hidden_units=[4], features=vocab.features(make_features()))
    model = build_model(cfg, vocab)
    assert model.backbone.logit.bias.item() == pytest.approx(math.log(0.2 / 0.8))
    torch.manual_seed(0)
    uniform = build_model(cfg.model_copy(update={"logit_bias_init": "uniform"}), vocab)
    torch.manual_seed(0)
    assert uniform.backbone.logit.bias.item() == build_model(cfg.model_copy(update={"logit_bias_init": "uniform"})).backbone.logit.bias.item()
    vocab.train_positives = None
    assert abs(build_model(cfg, vocab).backbone.logit.bias.item()) <= 1.0  # nothing counted: nn.Linear's init
