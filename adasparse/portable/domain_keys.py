"""The domain key: a domain's tuple of domain-aware field ids as one int64 — derived here only.

The key of ids (i_1, …, i_k) of fields with s_1, …, s_k ids is the mixed-radix number
Σ_j i_j · Π_{m<j} s_m, exact while Π s_j < :data:`KEY_LIMIT` = 2^63 (every key and every
weight then fits in int64). Larger products have no radix (None): the vocabulary and the runtime key the tuple by a
64-bit hash instead, and models with per-domain rows (STAR's) refuse them. The vocabulary
(:mod:`adasparse.vocabulary`), the model's domain layers (:mod:`adasparse.layers.domain_index`)
and the portable runtime (:mod:`.runtime`) all take their radix from :func:`key_radix`.
"""

from __future__ import annotations

import numpy as np

from .hashing import domain_id_from_hashes

KEY_LIMIT = 2**63  # Π sizes below this: every key and weight fits in int64


def key_radix(sizes: list[int]) -> np.ndarray | None:
    """The int64 weights that make ids · radix the exact key (fields of ``sizes`` ids each);
    None when the product of the sizes reaches :data:`KEY_LIMIT` (computed exactly)."""
    product = 1
    for s in sizes:
        product *= int(s)
    if product >= KEY_LIMIT:
        return None
    return np.cumprod([1] + [int(s) for s in sizes[:-1]], dtype=np.int64)


def domain_keys(ids: np.ndarray, radix: np.ndarray | None) -> np.ndarray:
    """(n, k) vocabulary ids → (n,) int64 domain keys: the mixed-radix number of the tuple, or a
    64-bit hash of it when ``radix`` is None (the product of the sizes does not fit)."""
    ids = np.asarray(ids, dtype=np.int64).reshape(len(ids), -1)
    if radix is not None:
        return ids @ radix
    return domain_id_from_hashes([ids[:, j].astype(np.uint64) for j in range(ids.shape[1])])


__all__ = ["KEY_LIMIT", "domain_keys", "key_radix"]
