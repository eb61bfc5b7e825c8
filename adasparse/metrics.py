"""LogLoss, AUC and GAUC from mergeable sufficient statistics.

GAUC is the impression-weighted mean of per-domain AUC over the domains that have both
classes: GAUC = Σ_d n_d · AUC_d / Σ_d n_d.

How results of several data-parallel workers combine exactly
------------------------------------------------------------
Each worker keeps, per (domain, score) pair, the number of positive and negative rows, where
the score is the predicted probability's float32 bit pattern (non-negative floats order like
their bits). AUC is the Mann–Whitney statistic with ties counted one half, so these counts are
*sufficient*: AUC and GAUC computed from the merged counts are exactly what one process
would compute over all rows (tests check equality with the whole, and with scikit-learn).
Merging is concatenation followed by re-aggregation, associative and order-free; the table
holds at most one entry per distinct (domain, score), so it is never larger than the rows.

``drop_mantissa_bits`` > 0 trades exactness for size: scores that agree in all but the last
k mantissa bits become ties (k = 8 keeps a relative resolution of 2^-15, i.e. ~1.5e-5 of the
score), which bounds the table at 2^(24-k)·(exponents in use) entries per domain. The result
is then the exact AUC of those rounded scores.

LogLoss is a float64 sum of per-row losses computed from logits (stable); merged results
agree with the whole up to float64 summation order (~1e-15 relative).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class DomainStats:
    """Per-domain rows, positives, CTR, AUC (NaN when one class is missing) and LogLoss."""

    domain: np.ndarray
    rows: np.ndarray
    positives: np.ndarray
    auc: np.ndarray
    logloss: np.ndarray

    @property
    def ctr(self) -> np.ndarray:
        return self.positives / np.maximum(self.rows, 1)


def _logloss_terms(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    # -[y log σ(z) + (1-y) log(1-σ(z))] = softplus(z) - y z, computed stably in float64
    z = logits.astype(np.float64)
    return np.logaddexp(0.0, z) - labels * z


def _prob_logloss(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    p = np.clip(probs.astype(np.float64), 1e-15, 1 - 1e-15)
    return -(labels * np.log(p) + (1 - labels) * np.log1p(-p))


class CTRMetrics:
    """Accumulate (domain, prediction, label) batches; merge across workers; compute metrics."""

    _COMPACT_ROWS = 1 << 21

    def __init__(self, drop_mantissa_bits: int = 0):
        if not 0 <= drop_mantissa_bits <= 23:
            raise ValueError("drop_mantissa_bits must be in [0, 23]")
        self.drop_mantissa_bits = drop_mantissa_bits
        self._chunks: list[tuple[np.ndarray, ...]] = []
        self._pending = 0
        self._table = (
            np.zeros(0, np.int64),  # domain
            np.zeros(0, np.uint32),  # score key
            np.zeros(0, np.int64),  # positives
            np.zeros(0, np.int64),  # negatives
        )
        self._ll_dom = np.zeros(0, np.int64)
        self._ll_sum = np.zeros(0, np.float64)

    # -- accumulation ------------------------------------------------------------------------
    def update(self, domains, labels, *, logits=None, probs=None) -> None:
        """Add rows. Give ``logits`` (preferred: exact, stable LogLoss) or ``probs``."""
        labels = np.asarray(labels).reshape(-1)
        domains = np.asarray(domains, dtype=np.int64).reshape(-1)
        if (logits is None) == (probs is None):
            raise ValueError("give exactly one of logits= or probs=")
        if logits is not None:
            logits = np.asarray(logits, dtype=np.float32).reshape(-1)
            probs = (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)
            ll = _logloss_terms(logits, labels)
        else:
            probs = np.asarray(probs, dtype=np.float32).reshape(-1)
            ll = _prob_logloss(probs, labels)
        if not (len(labels) == len(domains) == len(probs)):
            raise ValueError(f"length mismatch: {len(domains)} domains, {len(labels)} labels, {len(probs)} scores")
        if len(labels) == 0:
            return
        if not np.all((labels == 0) | (labels == 1)):
            raise ValueError("labels must be 0 or 1")
        if not np.all(np.isfinite(probs)) or probs.min() < 0 or probs.max() > 1:
            raise ValueError("predictions must be finite probabilities in [0, 1]")
        key = probs.view(np.uint32) >> np.uint32(self.drop_mantissa_bits)
        pos = labels.astype(np.int64)
        self._chunks.append((domains, key, pos, 1 - pos, ll))
        self._pending += len(labels)
        if self._pending >= self._COMPACT_ROWS:
            self._compact()

    def _compact(self) -> None:
        if not self._chunks:
            return
        dom = np.concatenate([self._table[0]] + [c[0] for c in self._chunks])
        key = np.concatenate([self._table[1]] + [c[1] for c in self._chunks])
        pos = np.concatenate([self._table[2]] + [c[2] for c in self._chunks])
        neg = np.concatenate([self._table[3]] + [c[3] for c in self._chunks])
        self._table = _aggregate(dom, key, pos, neg)
        ll_dom = np.concatenate([self._ll_dom] + [c[0] for c in self._chunks])
        ll_val = np.concatenate([self._ll_sum] + [c[4] for c in self._chunks])
        self._ll_dom, inv = np.unique(ll_dom, return_inverse=True)
        self._ll_sum = np.bincount(inv.reshape(-1), weights=ll_val, minlength=len(self._ll_dom))
        self._chunks = []
        self._pending = 0

    # -- merging -----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Plain numpy arrays (no objects): what a worker sends to be merged."""
        self._compact()
        d, k, p, n = self._table
        return {
            "drop_mantissa_bits": self.drop_mantissa_bits,
            "domain": d,
            "key": k,
            "pos": p,
            "neg": n,
            "ll_domain": self._ll_dom,
            "ll_sum": self._ll_sum,
        }

    @classmethod
    def from_states(cls, states: list[dict[str, Any]]) -> "CTRMetrics":
        """Merge the states of several accumulators (e.g. one per data-parallel worker)."""
        bits = {int(s["drop_mantissa_bits"]) for s in states}
        if len(bits) > 1:
            raise ValueError(f"cannot merge metrics with different drop_mantissa_bits {sorted(bits)}")
        out = cls(bits.pop() if bits else 0)
        if states:
            out._table = _aggregate(
                np.concatenate([s["domain"] for s in states]),
                np.concatenate([s["key"] for s in states]),
                np.concatenate([s["pos"] for s in states]),
                np.concatenate([s["neg"] for s in states]),
            )
            ll_dom = np.concatenate([s["ll_domain"] for s in states])
            out._ll_dom, inv = np.unique(ll_dom, return_inverse=True)
            out._ll_sum = np.bincount(
                inv.reshape(-1), weights=np.concatenate([s["ll_sum"] for s in states]), minlength=len(out._ll_dom)
            )
        return out

    def merge(self, other: "CTRMetrics") -> "CTRMetrics":
        return CTRMetrics.from_states([self.state(), other.state()])

    # -- results -----------------------------------------------------------------------------
    def per_domain(self) -> DomainStats:
        self._compact()
        dom, key, pos, neg = self._table
        if len(dom) == 0:
            e = np.zeros(0)
            return DomainStats(np.zeros(0, np.int64), e.astype(np.int64), e.astype(np.int64), e, e)
        starts = np.flatnonzero(np.r_[True, dom[1:] != dom[:-1]])
        auc_num = _pairs_ranked(pos, neg, starts)
        p_d = np.add.reduceat(pos, starts)
        n_d = np.add.reduceat(neg, starts)
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = np.where((p_d > 0) & (n_d > 0), auc_num / (p_d.astype(np.float64) * n_d), np.nan)
        rows = p_d + n_d
        domains = dom[starts]
        # logloss sums are keyed by the same domains (both sorted ascending)
        ll = self._ll_sum / np.maximum(rows, 1)
        return DomainStats(domains, rows, p_d, auc, ll)

    def compute(self) -> dict[str, float]:
        """``logloss``, ``auc``, ``gauc`` and counts over everything accumulated."""
        stats = self.per_domain()
        rows = int(stats.rows.sum())
        if rows == 0:
            raise ValueError("no rows were accumulated")
        _, key, pos, neg = self._table
        order = np.argsort(key, kind="stable")
        k, p, n = key[order], pos[order], neg[order]
        starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
        p_all, n_all = np.add.reduceat(p, starts), np.add.reduceat(n, starts)
        total_p, total_n = int(p_all.sum()), int(n_all.sum())
        auc = (
            float(_pairs_ranked(p_all, n_all, np.zeros(1, np.int64))[0] / (float(total_p) * total_n))
            if total_p and total_n
            else float("nan")
        )
        valid = ~np.isnan(stats.auc)
        gauc = (
            float((stats.rows[valid] * stats.auc[valid]).sum() / stats.rows[valid].sum())
            if valid.any()
            else float("nan")
        )
        return {
            "logloss": float(self._ll_sum.sum() / rows),
            "auc": auc,
            "gauc": gauc,
            "rows": rows,
            "positives": total_p,
            "domains": int(len(stats.domain)),
            "gauc_domains": int(valid.sum()),
        }


def _aggregate(dom, key, pos, neg):
    """Sum counts of equal (domain, key) pairs; result sorted by domain, then key."""
    if len(dom) == 0:
        return dom, key, pos, neg
    order = np.lexsort((key, dom))
    dom, key, pos, neg = dom[order], key[order], pos[order], neg[order]
    starts = np.flatnonzero(np.r_[True, (dom[1:] != dom[:-1]) | (key[1:] != key[:-1])])
    return dom[starts], key[starts], np.add.reduceat(pos, starts), np.add.reduceat(neg, starts)


def _pairs_ranked(pos: np.ndarray, neg: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Per segment (rows sorted by score), Σ_pos (#neg scored lower + ½ #neg tied): AUC·P·N."""
    cum_neg = np.cumsum(neg)
    seg_id = np.zeros(len(neg), np.int64)
    seg_id[starts[1:]] = 1
    seg_id = np.cumsum(seg_id)
    before_seg = (cum_neg - neg)[starts]  # negatives in earlier segments
    neg_below = cum_neg - neg - before_seg[seg_id]
    contrib = pos * (neg_below.astype(np.float64) + 0.5 * neg)
    return np.add.reduceat(contrib, starts)
