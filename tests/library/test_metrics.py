"""LogLoss/AUC/GAUC against scikit-learn, with ties and single-class domains; merging is exact."""

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from adasparse.metrics import CTRMetrics


def reference_gauc(domains, labels, scores):
    num = den = 0.0
    for d in np.unique(domains):
        m = domains == d
        if labels[m].min() == labels[m].max():
            continue
        num += m.sum() * roc_auc_score(labels[m], scores[m])
        den += m.sum()
    return num / den


def random_data(n=20000, domains=40, seed=0, tie_levels=50):
    rng = np.random.default_rng(seed)
    dom = rng.integers(0, domains, n) * 7919 - 123456  # arbitrary int64 ids, negative too
    logits = rng.normal(-1.5, 1.0, n) + (dom % 5) * 0.2
    logits = np.round(logits * tie_levels) / tie_levels  # many exact ties
    y = (rng.random(n) < 1 / (1 + np.exp(-logits))).astype(np.int64)
    # two single-class domains
    y[dom == dom[0]] = 0
    y[dom == dom[1]] = 1
    return dom, y, logits.astype(np.float32)


def test_matches_sklearn_with_ties_and_single_class_domains():
    dom, y, z = random_data()
    m = CTRMetrics()
    for i in range(0, len(y), 777):  # uneven batches
        m.update(dom[i : i + 777], y[i : i + 777], logits=z[i : i + 777])
    res = m.compute()
    p = (1 / (1 + np.exp(-z.astype(np.float64)))).astype(np.float32)
    assert len(np.unique(p)) < len(p) / 10  # the data really has ties
    assert res["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert res["gauc"] == pytest.approx(reference_gauc(dom, y, p), abs=1e-12)
    assert res["logloss"] == pytest.approx(log_loss(y, p.astype(np.float64)), rel=1e-6)
    assert res["rows"] == len(y) and res["positives"] == int(y.sum())
    assert res["gauc_domains"] == res["domains"] - 2


def test_per_domain_stats():
    dom, y, z = random_data(n=3000, domains=5)
    m = CTRMetrics()
    m.update(dom, y, logits=z)
    st = m.per_domain()
    p = (1 / (1 + np.exp(-z.astype(np.float64)))).astype(np.float32)
    for i, d in enumerate(st.domain):
        sel = dom == d
        assert st.rows[i] == sel.sum() and st.positives[i] == y[sel].sum()
        assert st.ctr[i] == pytest.approx(y[sel].mean())
        if 0 < y[sel].sum() < sel.sum():
            assert st.auc[i] == pytest.approx(roc_auc_score(y[sel], p[sel]), abs=1e-12)
        else:
            assert np.isnan(st.auc[i])


def test_merged_shards_equal_the_whole():
    dom, y, z = random_data(seed=3)
    whole = CTRMetrics()
    whole.update(dom, y, logits=z)
    parts = []
    rng = np.random.default_rng(0)
    shard = rng.integers(0, 3, len(y))  # three "workers" with interleaved rows
    for w in range(3):
        part = CTRMetrics()
        part.update(dom[shard == w], y[shard == w], logits=z[shard == w])
        parts.append(part.state())
    merged = CTRMetrics.from_states(parts).compute()
    ref = whole.compute()
    for k in ("auc", "gauc", "rows", "positives", "domains", "gauc_domains"):
        assert merged[k] == ref[k], k
    assert merged["logloss"] == pytest.approx(ref["logloss"], rel=1e-12)


def test_probs_input_and_validation():
    m = CTRMetrics()
    m.update([1, 1, 2, 2], [0, 1, 0, 1], probs=[0.1, 0.9, 0.8, 0.2])
    res = m.compute()
    # domain 1 ranks perfectly, domain 2 inversely; overall 3 of the 4 pairs are ordered
    assert res["auc"] == pytest.approx(0.75) and res["gauc"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        m.update([1], [2], probs=[0.5])
    with pytest.raises(ValueError, match="finite probabilities"):
        m.update([1], [1], probs=[float("nan")])
    with pytest.raises(ValueError, match="length mismatch"):
        m.update([1, 2], [1], probs=[0.5])


def test_dropped_mantissa_bits_bound_the_table_and_stay_close():
    dom, y, z = random_data(n=50000, domains=4, tie_levels=10**6)
    exact, coarse = CTRMetrics(), CTRMetrics(drop_mantissa_bits=14)
    exact.update(dom, y, logits=z)
    coarse.update(dom, y, logits=z)
    assert len(coarse.state()["key"]) < len(exact.state()["key"]) / 2
    assert coarse.compute()["auc"] == pytest.approx(exact.compute()["auc"], abs=1e-3)
    with pytest.raises(ValueError, match="different drop_mantissa_bits"):
        CTRMetrics.from_states([exact.state(), coarse.state()])


def test_compaction_keeps_results():
    dom, y, z = random_data(n=5000)
    a = CTRMetrics()
    a._COMPACT_ROWS = 100  # force many compactions
    b = CTRMetrics()
    for i in range(0, len(y), 64):
        a.update(dom[i : i + 64], y[i : i + 64], logits=z[i : i + 64])
    b.update(dom, y, logits=z)
    ra, rb = a.compute(), b.compute()
    assert ra["auc"] == rb["auc"] and ra["gauc"] == rb["gauc"]
