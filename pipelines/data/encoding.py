"""Vectorised batch transforms (pyarrow/numpy): raw rows → model inputs, with validation.

Run inside Ray Data's ``map_batches`` but free of Ray, so they are tested on plain tables.
String columns are dictionary-encoded first, so each distinct value is hashed once per batch.
Errors name the file (Ray Data's ``path`` column, when the read adds it) and the column.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from adasparse.portable.columns import categorical_hashes, numeric_values
from adasparse.portable.hashing import domain_id_from_hashes
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
    label = table[spec.label]
    if label.null_count:
        raise DataError(f"{_where(table, label.is_null().to_numpy(zero_copy_only=False))}: column {spec.label!r}: null label")
    y = label.to_numpy().astype(np.float32) if n else np.zeros(0, np.float32)
    bad = (y != 0) & (y != 1)
    if bad.any():
        raise DataError(f"{_where(table, bad)}: column {spec.label!r}: label {y[bad][0]:g} is not 0 or 1")
    if spec.time is not None:
        t = table[spec.time]
        if t.null_count:
            raise DataError(f"{_where(table, t.is_null().to_numpy(zero_copy_only=False))}: column {spec.time!r}: null time")
        times = time_values(t)
    else:
        times = np.zeros(n, dtype=np.int64)
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
    numeric = np.zeros((n, len(spec.numeric_fields)), dtype=np.float32)
    for j, name in enumerate(spec.numeric_fields):
        try:
            numeric[:, j] = numeric_values(table[name], name)
        except ValueError as err:
            inf = np.isinf(pc.fill_null(table[name], 0).to_numpy(zero_copy_only=False).astype(np.float64))
            raise DataError(f"{_where(table, inf)}: {err}") from None
    return {
        "cat_ids": cat,
        "numeric": numeric,
        "label": y,
        "domain": (vocab.keys(cat[:, :k]) if vocab is not None else domain_id_from_hashes(dom_h)) if n else np.zeros(0, np.int64),
        "time": times,
    }


def time_values(col) -> np.ndarray:
    """A time column as int64 (timestamps in their unit, numbers truncated)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_timestamp(col.type) or pa.types.is_date(col.type):
        col = col.cast(pa.int64()) if pa.types.is_timestamp(col.type) else pc.cast(col.cast(pa.date32()), pa.int32())
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64).astype(np.int64)
