"""Raw Arrow columns → 64-bit value hashes and vocabulary ids, as training encodes them.

Part of :mod:`adasparse.portable`: numpy, pyarrow and this package's relative imports only,
so an exported model (``adasparse export``) carries this file and encodes served rows with the
code that encoded the training rows.

Missing values: null, NaN, or one of the dataset's ``missing_values`` markers of a compatible
type (integers for numeric columns, strings for string columns) hash as the field's sentinel.
Floating-point ids that are integral (ids read from CSV with gaps) hash like the integers.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .hashing import field_hashes, hash_values

OOV = 0  # the id of a value outside a field's vocabulary


def missing_markers(arr: pa.Array, markers: list, values: np.ndarray | None = None) -> np.ndarray:
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
        missing = missing_markers(arr, markers)
        enc = pc.dictionary_encode(arr)
        uniq = enc.dictionary.to_numpy(zero_copy_only=False)
        idx = pc.fill_null(enc.indices, 0).to_numpy(zero_copy_only=False)
        h = hash_values(uniq, name)[idx] if len(uniq) else np.zeros(len(arr), np.uint64)
        return np.where(missing, field_hashes(np.array([0]), name, np.array([True]))[0], h)
    if pa.types.is_null(arr.type):
        return field_hashes(np.zeros(len(arr), np.int64), name, np.ones(len(arr), bool))
    vals = (pc.fill_null(arr, 0) if arr.null_count else arr).to_numpy(zero_copy_only=False)
    missing = missing_markers(arr, markers, vals)
    if pa.types.is_floating(arr.type):
        vals = np.where(np.isfinite(vals), vals, 0.0)
        ints = vals.astype(np.int64)
        # integral floats (ids read from CSV with gaps) hash like the integers they are
        vals = np.where(ints == vals, ints, vals.view(np.int64))
    return field_hashes(vals, name, missing)


def lookup_ids(sorted_hashes: np.ndarray, sorted_ids: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """Vocabulary ids of values given by their hashes: ``sorted_ids[i]`` is the id of
    ``sorted_hashes[i]`` (ascending); values not in the vocabulary get :data:`OOV`."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    if not len(sorted_hashes):
        return np.zeros(len(hashes), dtype=np.int64)
    pos = np.minimum(np.searchsorted(sorted_hashes, hashes), len(sorted_hashes) - 1)
    return np.where(sorted_hashes[pos] == hashes, sorted_ids[pos], OOV).astype(np.int64)
