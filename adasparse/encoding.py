"""Raw columns → model inputs: hashed bucket ids, numeric matrix, domain ids.

One function used by every path that feeds the model (in-memory training, the Ray Data
pipeline's ``map_batches``, serving), so a value always lands in the same bucket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from adasparse.config import FeatureConfig
from adasparse.hashing import domain_id, hash_to_buckets


@dataclass
class EncodedBatch:
    cat_ids: np.ndarray  # (n, F) int64, domain-aware fields first
    numeric: np.ndarray  # (n, M) float32
    domain: np.ndarray  # (n,) int64 stable domain id
    label: np.ndarray | None = None  # (n,) float32

    def __len__(self) -> int:
        return len(self.cat_ids)


def encode_columns(columns: Mapping[str, np.ndarray], features: FeatureConfig, label: str | None = None) -> EncodedBatch:
    """Hash the categorical columns named in ``features`` and stack the numeric ones."""
    for name in [f.name for f in features.all_categorical] + list(features.numeric_fields) + ([label] if label else []):
        if name not in columns:
            raise KeyError(f"column {name!r} is missing")
    n = len(columns[features.domain_fields[0].name])
    cat = np.empty((n, len(features.all_categorical)), dtype=np.int64)
    for j, f in enumerate(features.all_categorical):
        cat[:, j] = hash_to_buckets(np.asarray(columns[f.name]), f.name, f.buckets)
    numeric = (
        np.stack([np.asarray(columns[m], dtype=np.float32) for m in features.numeric_fields], axis=1)
        if features.numeric_fields
        else np.zeros((n, 0), dtype=np.float32)
    )
    names = [f.name for f in features.domain_fields]
    dom = domain_id([np.asarray(columns[m]) for m in names], names)
    y = None if label is None else np.asarray(columns[label], dtype=np.float32)
    return EncodedBatch(cat, numeric, dom, y)
