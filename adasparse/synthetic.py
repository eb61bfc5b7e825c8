"""Synthetic multi-domain CTR data: the generating model (pure numpy, chunked, deterministic).

The generating model
--------------------
* Domains are the combinations of ``k`` domain-aware fields (like gender × age × star level in
  the paper's public set): D = Π cardinalities. Domain sizes are long-tailed: domain d is drawn
  with probability ∝ rank_d^(-domain_zipf) over a seeded random ranking, so a few domains
  are huge and most are tiny.
* ``G`` latent preference groups. Each domain mixes them with weights
  w_d = softmax(sharpness · Σ_j A_j[x_j]) where x_j are its domain-field values and A_j random
  tables: domains that share attribute values share preferences, which is what lets small
  domains borrow strength from large ones.
* Domain-agnostic categorical field f takes value v with Zipf(value_zipf) probability over its
  cardinality. Each value has a shared effect a_{f,v} and per-group effects b_{f,v,g}; group g
  reads only the fields f with f % G == g (groups depend on different features).
* Numeric fields are N(0, 1) with per-group slopes.
* logit = c + δ_d + shared_scale·Σ_f a_{f,v_f} + group_scale·Σ_g w_{d,g}(Σ_f b_{f,v_f,g} + Σ_m s_{m,g} x_m),
  label ~ Bernoulli(σ(logit)); δ_d ~ N(0, domain_bias_std) is a per-domain CTR offset and c is
  calibrated (bisection on a seeded sample) so that the mean CTR equals ``base_ctr``.
  A domain-blind model sees only Σ_g w̄_g(·): the domain-specific part is what it cannot fit.
* Optional per-user effects (``users`` > 0): a ``user_id`` field whose values are drawn
  Zipf(user_zipf) over a seeded ranking (a few very active users, most seen once or never);
  each user belongs to one domain (drawn like the rows' domains: user-side domain keys, as in
  the paper's public set, so a row's domain is its user's) and adds its own offset
  u_i ~ N(0, user_effect_std) to the logit.
* Optional heavy-tailed ids (``items`` > 0): an ``item_id`` field drawn Zipf(item_zipf) with an
  offset t_j ~ N(0, item_effect_std) per item.
* ``time`` is the row index (seconds from ``time_origin``), so a split by time is a split by rows.

``PRESETS`` names the generators the studies in docs/model.md use.

Every array is a pure function of (spec, seed, row range): chunk i of N rows is the same on any
machine, so generation can be spread over many tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class SyntheticSpec:
    domain_cardinalities: tuple[int, ...] = (4, 20, 50)
    num_categorical: int = 12
    categorical_cardinality: int = 10_000
    num_numeric: int = 2
    groups: int = 8
    group_sharpness: float = 3.0
    domain_zipf: float = 1.1
    value_zipf: float = 1.05
    shared_scale: float = 0.6
    group_scale: float = 1.0
    domain_bias_std: float = 0.5
    base_ctr: float = 0.03
    time_origin: int = 1_700_000_000
    domain_field_names: tuple[str, ...] = field(default=())
    users: int = 0
    user_zipf: float = 1.0
    user_effect_std: float = 1.0
    items: int = 0
    item_zipf: float = 1.1
    item_effect_std: float = 0.5

    @property
    def num_domains(self) -> int:
        return int(np.prod(self.domain_cardinalities))

    def domain_names(self) -> list[str]:
        if self.domain_field_names:
            return list(self.domain_field_names)
        return [f"domain_{j}" for j in range(len(self.domain_cardinalities))]

    def categorical_names(self) -> list[str]:
        return [f"cat_{f}" for f in range(self.num_categorical)]

    def id_cardinalities(self) -> dict[str, int]:
        """The optional id fields and their number of distinct values."""
        return {name: n for name, n in (("user_id", self.users), ("item_id", self.items)) if n > 0}

    def numeric_names(self) -> list[str]:
        return [f"num_{m}" for m in range(self.num_numeric)]


def _zipf_cdf(n: int, s: float) -> np.ndarray:
    w = np.arange(1, n + 1, dtype=np.float64) ** (-s)
    return np.cumsum(w) / w.sum()


class SyntheticWorld:
    """The fixed random parameters of the generating model for (spec, seed)."""

    def __init__(self, spec: SyntheticSpec, seed: int):
        self.spec = spec
        self.seed = seed
        rng = np.random.default_rng([seed, 0xADA])
        D, G = spec.num_domains, spec.groups
        self.domain_rank = rng.permutation(D)  # domain index -> popularity rank
        self.domain_of_rank = np.argsort(self.domain_rank)
        self.domain_cdf = _zipf_cdf(D, spec.domain_zipf)
        self.value_cdf = _zipf_cdf(spec.categorical_cardinality, spec.value_zipf)
        self.value_perm = np.stack([rng.permutation(spec.categorical_cardinality) for _ in range(spec.num_categorical)])
        # domain attributes and mixing weights w_d
        self.domain_attrs = np.stack(
            np.unravel_index(np.arange(D), spec.domain_cardinalities), axis=1
        )  # (D, k)
        tables = [rng.normal(size=(c, G)) for c in spec.domain_cardinalities]
        score = sum(t[self.domain_attrs[:, j]] for j, t in enumerate(tables))
        score = spec.group_sharpness * score
        score -= score.max(axis=1, keepdims=True)
        w = np.exp(score)
        self.domain_weights = w / w.sum(axis=1, keepdims=True)  # (D, G)
        self.domain_bias = rng.normal(0.0, spec.domain_bias_std, size=D)
        # value effects
        V, F = spec.categorical_cardinality, spec.num_categorical
        self.shared_effect = rng.normal(0.0, 1.0 / np.sqrt(max(F, 1)), size=(F, V))
        reads = np.zeros((F, G))
        reads[np.arange(F), np.arange(F) % G] = 1.0
        per_group = max(1, -(-F // G))
        self.group_effect = rng.normal(0.0, 1.0 / np.sqrt(per_group), size=(F, V, G)) * reads[:, None, :]
        self.numeric_slope = rng.normal(0.0, 0.5, size=(spec.num_numeric, G))
        # optional id fields (drawn last, so a spec without them keeps its world)
        if spec.users:
            self.user_of_rank = rng.permutation(spec.users)
            self.user_cdf = _zipf_cdf(spec.users, spec.user_zipf)
            self.user_domain = self._domains(rng.random(spec.users))
            self.user_effect = rng.normal(0.0, spec.user_effect_std, size=spec.users)
        if spec.items:
            self.item_of_rank = rng.permutation(spec.items)
            self.item_cdf = _zipf_cdf(spec.items, spec.item_zipf)
            self.item_effect = rng.normal(0.0, spec.item_effect_std, size=spec.items)
        self.intercept = 0.0
        self.intercept = self._calibrate(rng)

    def _calibrate(self, rng: np.random.Generator) -> float:
        z = self._logits(self._draw(np.random.default_rng([self.seed, 0xCA1]), 50_000))
        lo, hi = -20.0, 10.0
        for _ in range(60):
            mid = (lo + hi) / 2
            if (1 / (1 + np.exp(-(z + mid)))).mean() < self.spec.base_ctr:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    def _domains(self, u: np.ndarray) -> np.ndarray:
        """Domains for uniform draws ``u``: Zipf over the seeded popularity ranking."""
        rank = np.minimum(np.searchsorted(self.domain_cdf, u, side="right"), self.spec.num_domains - 1)
        return self.domain_of_rank[rank]

    @staticmethod
    def _ranked(cdf: np.ndarray, of_rank: np.ndarray, u: np.ndarray) -> np.ndarray:
        return of_rank[np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)]

    def _draw(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        s = self.spec
        domain = self._domains(rng.random(n))
        idx = np.minimum(
            np.searchsorted(self.value_cdf, rng.random((n, s.num_categorical)), side="right"),
            s.categorical_cardinality - 1,
        )
        values = np.take_along_axis(self.value_perm.T, idx, axis=0) if n else idx
        numeric = rng.normal(size=(n, s.num_numeric)).astype(np.float32)
        out = {"domain": domain, "values": values, "numeric": numeric}
        if s.users:
            out["user_id"] = self._ranked(self.user_cdf, self.user_of_rank, rng.random(n))
            out["domain"] = self.user_domain[out["user_id"]]  # a row's domain is its user's
        if s.items:
            out["item_id"] = self._ranked(self.item_cdf, self.item_of_rank, rng.random(n))
        return out

    def _logits(self, d: dict[str, np.ndarray]) -> np.ndarray:
        s = self.spec
        dom, vals = d["domain"], d["values"]
        f_idx = np.arange(s.num_categorical)
        shared = self.shared_effect[f_idx, vals].sum(axis=1)
        group = self.group_effect[f_idx, vals].sum(axis=1) + d["numeric"] @ self.numeric_slope  # (n, G)
        mixed = (self.domain_weights[dom] * group).sum(axis=1)
        z = self.intercept + self.domain_bias[dom] + s.shared_scale * shared + s.group_scale * mixed
        if s.users:
            z = z + self.user_effect[d["user_id"]]
        if s.items:
            z = z + self.item_effect[d["item_id"]]
        return z

    def chunk(self, start: int, n: int) -> dict[str, np.ndarray]:
        """Rows [start, start + n): columns by name, plus ``label``, ``time`` and ``domain``."""
        rng = np.random.default_rng([self.seed, 0xD47A, start])
        d = self._draw(rng, n)
        p = 1.0 / (1.0 + np.exp(-self._logits(d)))
        label = (rng.random(n) < p).astype(np.int8)
        out: dict[str, np.ndarray] = {}
        for j, name in enumerate(self.spec.domain_names()):
            out[name] = self.domain_attrs[d["domain"], j].astype(np.int64)
        for f, name in enumerate(self.spec.categorical_names()):
            out[name] = d["values"][:, f].astype(np.int64)
        for name in self.spec.id_cardinalities():
            out[name] = d[name].astype(np.int64)
        for m, name in enumerate(self.spec.numeric_names()):
            out[name] = d["numeric"][:, m]
        out["label"] = label
        out["time"] = self.spec.time_origin + np.arange(start, start + n, dtype=np.int64)
        out["domain"] = d["domain"].astype(np.int64)
        out["group"] = self.domain_weights[d["domain"]].argmax(axis=1)
        return out


PRESETS: dict[str, SyntheticSpec] = {
    "default": SyntheticSpec(),
    # fewer, flatter domains with strong group effects and a high base rate (tests/library/test_learning.py's world)
    "grouped": SyntheticSpec(domain_cardinalities=(4, 6, 8), group_sharpness=20.0, domain_zipf=0.3, value_zipf=0.5,
                             shared_scale=0.0, group_scale=3.0, domain_bias_std=0.3, base_ctr=0.25),
    # strong per-user effects (user-side domains) and heavy-tailed item ids, like the paper's public set
    "users": SyntheticSpec(users=100_000, user_zipf=0.8, user_effect_std=1.0, items=200_000, item_zipf=1.1, item_effect_std=0.5),
}
