"""The paper's split, train/dev/test = 4:1:1 by time, without sorting.

One pass over the time column alone builds a histogram with 2^16 bins between the column's
minimum and maximum (read from Parquet statistics when present), and the cut points are the
bin edges where the cumulative count crosses 4/6 and 5/6 (the spec's fractions). A split
boundary is exact to one bin (1/65536 of the time range); rows with one timestamp never
straddle a cut.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.data.inline_read import raw_tables, reads_inline
from pipelines.data.sources import DataError, DataSource
from pipelines.data.splits import TimeCuts
from adasparse.portable.rules import time_values

HIST_BINS = 1 << 16


def _time_range_from_stats(source: DataSource) -> tuple[int, int] | None:
    if source.spec.format != "parquet":
        return None
    lo, hi = None, None
    for path, n in zip(source.files, source.rows):
        if n == 0:
            continue
        with source.fs.open(path, "rb") as fh:
            meta = pq.ParquetFile(fh).metadata
        idx = meta.schema.to_arrow_schema().get_field_index(source.spec.time)
        for g in range(meta.num_row_groups):
            st = meta.row_group(g).column(idx).statistics
            if st is None or not st.has_min_max or isinstance(st.min, (bytes, str)):
                return None
            mn, mx = st.min, st.max
            if hasattr(mn, "timestamp"):
                return None  # timestamps: fall back to a min/max pass in the column's own unit
            lo = mn if lo is None else min(lo, mn)
            hi = mx if hi is None else max(hi, mx)
    return None if lo is None else (int(lo), int(hi))


def time_cuts(source: DataSource) -> TimeCuts:
    """Cut points of the train/dev/test split by time (see the module docstring)."""
    spec = source.spec
    if spec.time is None:
        raise ValueError(f"{spec.name}: no time column; the dataset is split by split_files")
    inline = reads_inline(source)  # a small dataset: read here, no Ray Data pipeline
    if inline:
        tables = list(raw_tables(source, [spec.time]))

        def passes(fn):
            return [{k: v[0] for k, v in fn(t).items()} for t in tables]
    else:
        from pipelines.data.reading import read_raw

        ds = read_raw(source, [spec.time], with_paths=False)

        def passes(fn):
            return ds.map_batches(fn, batch_format="pyarrow").iter_rows()
    rng = _time_range_from_stats(source)
    if rng is None:
        mm = [r for r in passes(_min_max(spec.time)) if r["n"] > 0]
        rng = (int(min(r["lo"] for r in mm)), int(max(r["hi"] for r in mm)))
    lo, hi = rng
    if hi == lo:
        raise DataError(f"{spec.location}: column {spec.time!r} holds one timestamp only; cannot split by time")
    edges = np.linspace(lo, hi + 1, HIST_BINS + 1)
    counts = np.zeros(HIST_BINS, dtype=np.int64)
    for row in passes(_histogram(spec.time, edges)):
        counts += np.asarray(row["counts"], dtype=np.int64)
    cum = np.cumsum(counts) / max(counts.sum(), 1)
    f1, f2 = spec.split.fractions()
    i1 = int(np.searchsorted(cum, f1))  # first bin where the cumulative share reaches f1
    i2 = int(np.searchsorted(cum, f2))
    t1 = int(np.ceil(edges[min(i1 + 1, HIST_BINS)]))
    t2 = int(np.ceil(edges[min(i2 + 1, HIST_BINS)]))
    # integer times below t1 are exactly those of bins 0..i1 (an integer at or above a bin's
    # lower edge is at or above that edge's ceiling), so each split's rows are a sum of bins
    n_train = int(counts[: i1 + 1].sum())
    n_dev = int(counts[i1 + 1: i2 + 1].sum()) if t2 > t1 else 0
    rows = (n_train, n_dev, int(counts.sum()) - n_train - n_dev)
    for name, n in zip(("train", "dev", "test"), rows):
        if n == 0:
            raise DataError(f"{spec.location}: the split by time leaves the {name} split empty (train {rows[0]:,} rows, "
                            f"dev {rows[1]:,}, test {rows[2]:,}): column {spec.time!r} has too few distinct times "
                            f"for the split {spec.split.train:g}:{spec.split.dev:g}:{spec.split.test:g}")
    return TimeCuts(lo, t1, max(t1, t2), hi, rows)


def _min_max(col: str):
    def fn(t: pa.Table) -> dict:
        v = time_values(t[col])
        return {"lo": np.array([v.min() if len(v) else 0]), "hi": np.array([v.max() if len(v) else 0]), "n": np.array([len(v)])}

    return fn


def _histogram(col: str, edges: np.ndarray):
    def fn(t: pa.Table) -> dict:
        counts, _ = np.histogram(time_values(t[col]), bins=edges)
        return {"counts": counts[None, :]}

    return fn


__all__ = ["HIST_BINS", "time_cuts"]
