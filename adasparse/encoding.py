"""Raw columns → model inputs: hashed bucket ids, numeric matrix, domain ids.

One implementation used by every path that feeds the model (in-memory training, the Ray
Data pipeline's ``map_batches``, serving), so a value always lands in the same bucket.

Missing values: where a ``missing`` mask marks a categorical value (null, or one of the
dataset's missing markers such as ``-1``), the value is replaced by a per-field sentinel, so
all missing values of a field share one bucket and one domain-id component.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from adasparse.config import FeatureConfig
from adasparse.portable.hashing import domain_id_from_hashes, field_hashes

__all__ = ["EncodedBatch", "domain_id_from_hashes", "encode_columns", "field_hashes"]


@dataclass
class EncodedBatch:
    cat_ids: np.ndarray  # (n, F) int64, domain-aware fields first
    numeric: np.ndarray  # (n, M) float32
    domain: np.ndarray  # (n,) int64 stable domain id
    label: np.ndarray | None = None  # (n,) float32

    def __len__(self) -> int:
        return len(self.cat_ids)


def encode_columns(
    columns: Mapping[str, np.ndarray],
    features: FeatureConfig,
    label: str | None = None,
    missing: Mapping[str, np.ndarray] | None = None,
) -> EncodedBatch:
    """Hash the categorical columns named in ``features`` and stack the numeric ones.

    ``missing`` optionally maps a categorical column to a boolean mask of its missing rows.
    """
    missing = missing or {}
    for name in [f.name for f in features.all_categorical] + list(features.numeric_fields) + ([label] if label else []):
        if name not in columns:
            raise KeyError(f"column {name!r} is missing")
    n = len(columns[features.domain_fields[0].name])
    cat = np.empty((n, len(features.all_categorical)), dtype=np.int64)
    domain_hashes = []
    for j, f in enumerate(features.all_categorical):
        h = field_hashes(columns[f.name], f.name, missing.get(f.name))
        cat[:, j] = (h % np.uint64(f.buckets)).astype(np.int64)
        if j < features.num_domain_fields:
            domain_hashes.append(h)
    numeric = (
        np.stack([np.asarray(columns[m], dtype=np.float32) for m in features.numeric_fields], axis=1)
        if features.numeric_fields
        else np.zeros((n, 0), dtype=np.float32)
    )
    y = None if label is None else np.asarray(columns[label], dtype=np.float32)
    return EncodedBatch(cat, numeric, domain_id_from_hashes(domain_hashes), y)
