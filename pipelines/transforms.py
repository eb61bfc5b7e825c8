"""Vectorised batch transforms (pyarrow/numpy): raw rows → model inputs, with validation.

Run inside Ray Data's ``map_batches`` but free of Ray, so they are tested on plain tables.
String columns are dictionary-encoded first, so each distinct value is hashed once per batch.
Errors name the file (Ray Data's ``path`` column, when the read adds it) and the column.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from adasparse.encoding import domain_id_from_hashes, field_hashes
from adasparse.hashing import hash_values
from adasparse.vocabulary import DomainVocabulary
from pipelines.sources import DataError
from pipelines.spec import DatasetSpec

PATH_COLUMN = "path"


def _where(table: pa.Table, mask: np.ndarray) -> str:
    """The file of the first row flagged by ``mask`` (or a generic label)."""
    if PATH_COLUMN in table.column_names:
        return str(table[PATH_COLUMN][int(np.flatnonzero(mask)[0])])
    return "batch"


def _missing_markers(arr: pa.Array, markers: list, values: np.ndarray | None = None) -> np.ndarray:
    """Null or equal to one of the spec's missing markers of a compatible type. ``values``:
    the column as numpy (nulls filled), when the caller has it, so numbers compare in numpy."""
    missing = arr.is_null().to_numpy(zero_copy_only=False) if arr.null_count else np.zeros(len(arr), bool)
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
        vals = values if values is not None else pc.fill_null(arr, 0).to_numpy(zero_copy_only=False)
        for m in markers:
            if isinstance(m, int) and not isinstance(m, bool):
                missing |= vals == m
        if pa.types.is_floating(arr.type):
            missing |= np.isnan(vals)
    elif pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        strs = [str(m) for m in markers]
        missing |= pc.fill_null(pc.is_in(arr, pa.array(strs, arr.type)), False).to_numpy(zero_copy_only=False)
    return missing


def categorical_hashes(arr: pa.Array, name: str, markers: list) -> np.ndarray:
    """64-bit hashes of a categorical column; missing values share the field's sentinel."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        missing = _missing_markers(arr, markers)
        enc = pc.dictionary_encode(arr)
        uniq = enc.dictionary.to_numpy(zero_copy_only=False)
        idx = pc.fill_null(enc.indices, 0).to_numpy(zero_copy_only=False)
        h = hash_values(uniq, name)[idx] if len(uniq) else np.zeros(len(arr), np.uint64)
        return np.where(missing, field_hashes(np.array([0]), name, np.array([True]))[0], h)
    if pa.types.is_null(arr.type):
        return field_hashes(np.zeros(len(arr), np.int64), name, np.ones(len(arr), bool))
    vals = (pc.fill_null(arr, 0) if arr.null_count else arr).to_numpy(zero_copy_only=False)
    missing = _missing_markers(arr, markers, vals)
    if pa.types.is_floating(arr.type):
        vals = np.where(np.isfinite(vals), vals, 0.0)
        ints = vals.astype(np.int64)
        # integral floats (ids read from CSV with gaps) hash like the integers they are
        vals = np.where(ints == vals, ints, vals.view(np.int64))
    return field_hashes(vals, name, missing)


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
        col = table[name]
        vals = pc.fill_null(col, 0).to_numpy(zero_copy_only=False).astype(np.float64) if n else np.zeros(0)
        inf = np.isinf(vals)
        if inf.any():
            raise DataError(f"{_where(table, inf)}: column {name!r}: infinite value")
        numeric[:, j] = np.nan_to_num(vals, nan=0.0)
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
