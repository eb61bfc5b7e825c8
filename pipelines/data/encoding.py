"""The training job's encoder (pyarrow/numpy): raw rows → model inputs.

Run inside Ray Data's ``map_batches`` and each worker's train stream, but free of Ray, so it is
tested on plain tables. What a value may be and what it becomes is :mod:`adasparse.portable.rules`
(the rules validation and the exported runtime apply too); categorical columns are hashed by
:mod:`adasparse.portable.columns` (strings dictionary-encoded first: each distinct value hashed
once per batch). Errors name the file (Ray Data's ``path`` column, or the stream's file and row
group) and the column.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from adasparse.portable.columns import categorical_hashes
from adasparse.portable.hashing import domain_id_from_hashes
from adasparse.portable.rules import RuleError, checked_time_values, label_values, numeric_values
from adasparse.vocabulary import DomainVocabulary
from pipelines.data.sources import DataError
from pipelines.data.spec import DatasetSpec

PATH_COLUMN = "path"


def _where(table: pa.Table, mask: np.ndarray) -> str:
    """The file of the first row flagged by ``mask`` (or a generic label)."""
    if PATH_COLUMN in table.column_names:
        return str(table[PATH_COLUMN][int(np.flatnonzero(mask)[0])])
    return "batch"


def domain_hashes(table: pa.Table, spec: DatasetSpec) -> np.ndarray:
    """(n, k) uint64: the value hashes of the domain-aware fields (what a vocabulary maps to ids)."""
    cols = [categorical_hashes(table[f.name], f.name, spec.missing_values) for f in spec.domain_fields]
    return np.stack(cols, axis=1) if table.num_rows else np.zeros((0, len(cols)), np.uint64)


def encode_table(table: pa.Table, spec: DatasetSpec, vocab: DomainVocabulary | None = None) -> dict[str, np.ndarray]:
    """Columns ``cat_ids`` (n, F) int64, ``numeric`` (n, M) float32, ``label`` (n,) float32,
    ``domain`` (n,) int64 and ``time`` (n,) int64 for one batch.

    With ``vocab`` (the training job's way) the domain-aware fields get their exact vocabulary
    ids and ``domain`` is the key of the id tuple (:mod:`adasparse.vocabulary`); without it they
    are hashed into the spec's buckets like the other fields, and ``domain`` is a hash of the
    raw values."""
    n = table.num_rows
    try:
        y = label_values(table[spec.label], spec.label)
        times = checked_time_values(table[spec.time], spec.time) if spec.time is not None else np.zeros(n, dtype=np.int64)
        numeric = np.zeros((n, len(spec.numeric_fields)), dtype=np.float32)
        for j, name in enumerate(spec.numeric_fields):
            numeric[:, j] = numeric_values(table[name], name)
    except RuleError as err:
        raise DataError(f"{_where(table, err.violation.mask)}: {err}") from None
    fields = spec.domain_fields + spec.categorical_fields
    cat = np.empty((n, len(fields)), dtype=np.int64)
    cat_u = cat.view(np.uint64)  # bucket < 2^63: the same bits as int64
    dom_h = []
    k = len(spec.domain_fields)
    for j, f in enumerate(fields):
        h = categorical_hashes(table[f.name], f.name, spec.missing_values)
        if j < k:
            dom_h.append(h)
            if vocab is not None:
                cat[:, j] = vocab.fields[j].lookup(h)
                continue
        np.remainder(h, np.uint64(f.buckets), out=cat_u[:, j])
    return {
        "cat_ids": cat,
        "numeric": numeric,
        "label": y,
        "domain": (vocab.keys(cat[:, :k]) if vocab is not None else domain_id_from_hashes(dom_h)) if n else np.zeros(0, np.int64),
        "time": times,
    }
