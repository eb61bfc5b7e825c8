"""Encoded columns between NumPy and Arrow, without copies (Ray Data's blocks are Arrow tables)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

EMPTY_DTYPE = np.float32  # the one 2-D column that may have no columns: numeric, of a spec without numeric fields


def columns_to_arrow(cols: dict[str, np.ndarray]) -> pa.Table:
    """Encoded columns as one Arrow block, without copying: a 2-D array becomes a fixed-size
    list column over its buffer. (Left to Ray Data, a dict of numpy arrays is converted to its
    tensor extension type, which cost as much CPU as the encoding itself; an empty 2-D array
    even fell back to pickled objects.)"""
    out = {}
    for k, v in cols.items():
        if v.ndim == 2 and v.shape[1] == 0:
            # no columns (a dataset without numeric fields): pyarrow has no fixed-size list of
            # size 0 (its arithmetic divides by the size), so the rows travel as a null column
            if v.dtype != EMPTY_DTYPE:
                raise ValueError(f"column {k!r}: an empty 2-D column must be {EMPTY_DTYPE}, not {v.dtype}")
            out[k] = pa.nulls(len(v))
        elif v.ndim == 2:
            out[k] = pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(v).reshape(-1)), v.shape[1])
        else:
            out[k] = pa.array(v)
    return pa.table(out)


def arrow_to_columns(table: pa.Table) -> dict[str, np.ndarray]:
    """The inverse of :func:`columns_to_arrow` (zero-copy where the block is one chunk)."""
    out = {}
    for name in table.column_names:
        col = table[name]
        arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
        if pa.types.is_null(arr.type):  # an empty 2-D column (see columns_to_arrow)
            out[name] = np.zeros((len(arr), 0), dtype=EMPTY_DTYPE)
        elif pa.types.is_fixed_size_list(arr.type):
            # flatten() honours the slice offset of a batch cut from a larger block
            out[name] = arr.flatten().to_numpy(zero_copy_only=False).reshape(len(arr), arr.type.list_size)
        else:
            out[name] = arr.to_numpy(zero_copy_only=False)
    return out


__all__ = ["arrow_to_columns", "columns_to_arrow"]
