"""Streaming ingest on Ray Data: read the spec's shards, split by time, encode.

* ``read_parquet``/``read_csv`` over all shards, only the spec's columns, streamed (never
  materialised); the train split shuffles file order every epoch (``shuffle="files"``) and
  iterators add a local shuffle buffer (:func:`train_batches`).
* The paper's split, train/dev/test = 4:1:1 by time, without sorting: one pass over the time
  column alone builds a histogram with 2^16 bins between the column's minimum and maximum
  (read from Parquet statistics when present), and the cut points are the bin edges where the
  cumulative count crosses 4/6 and 5/6. A split boundary is exact to one bin
  (1/65536 of the time range); rows with one timestamp never straddle a cut.
* Encoding (hashing, domain ids, label/numeric checks) runs in ``map_batches`` with
  :func:`pipelines.transforms.encode_table`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import ray.data
from pyarrow.fs import FSSpecHandler, PyFileSystem

from pipelines.sources import DataError, DataSource, open_source
from pipelines.spec import DatasetSpec
from pipelines.transforms import PATH_COLUMN, encode_table, time_values

HIST_BINS = 1 << 16
SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class TimeCuts:
    """Rows with time < train_end are train, < dev_end dev, the rest test."""

    start: int
    train_end: int
    dev_end: int
    stop: int

    def bounds(self, split: str) -> tuple[float, float]:
        return {
            "train": (-np.inf, self.train_end),
            "dev": (self.train_end, self.dev_end),
            "test": (self.dev_end, np.inf),
            "all": (-np.inf, np.inf),
        }[split]


def _arrow_fs(source: DataSource):
    return PyFileSystem(FSSpecHandler(source.fs)) if source.spec.is_s3 else None


def read_raw(
    source: DataSource, columns: list[str], *, split: str = "all", shuffle_files: bool = False, with_paths: bool = True
) -> ray.data.Dataset:
    """A lazy Ray dataset over the files of ``split`` with only ``columns`` (+ ``path``)."""
    all_files, rows = source.files_for(split)
    files = [f for f, n in zip(all_files, rows) if n != 0]  # zero-row shards hold nothing to read
    if not files:
        raise DataError(f"{source.spec.location}: every file is empty")
    # one read task per file: left to its size estimate Ray packed several shards into a task,
    # whose worker then peaked higher the more rows the dataset had (benchmarks/ingest.py)
    kw = dict(filesystem=_arrow_fs(source), include_paths=with_paths, shuffle="files" if shuffle_files else None,
              override_num_blocks=len(files))
    if source.spec.format == "parquet":
        # select_columns is pushed down into the read: only these columns leave the files
        return ray.data.read_parquet(files, **kw).select_columns(columns + ([PATH_COLUMN] if with_paths else []))
    import pyarrow.csv as pacsv

    ds = ray.data.read_csv(files, convert_options=pacsv.ConvertOptions(include_columns=columns), **kw)
    return ds


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
    ds = read_raw(source, [spec.time], with_paths=False)
    rng = _time_range_from_stats(source)
    if rng is None:
        mm = ds.map_batches(_min_max(spec.time), batch_format="pyarrow").take_all()
        mm = [r for r in mm if r["n"] > 0]
        rng = (int(min(r["lo"] for r in mm)), int(max(r["hi"] for r in mm)))
    lo, hi = rng
    if hi == lo:
        raise DataError(f"{spec.location}: column {spec.time!r} holds one timestamp only; cannot split by time")
    edges = np.linspace(lo, hi + 1, HIST_BINS + 1)
    counts = np.zeros(HIST_BINS, dtype=np.int64)
    for row in ds.map_batches(_histogram(spec.time, edges), batch_format="pyarrow").iter_rows():
        counts += np.asarray(row["counts"], dtype=np.int64)
    cum = np.cumsum(counts) / max(counts.sum(), 1)
    f1, f2 = spec.split.fractions()
    i1 = int(np.searchsorted(cum, f1))  # first bin where the cumulative share reaches f1
    i2 = int(np.searchsorted(cum, f2))
    t1 = int(np.ceil(edges[min(i1 + 1, HIST_BINS)]))
    t2 = int(np.ceil(edges[min(i2 + 1, HIST_BINS)]))
    return TimeCuts(lo, t1, max(t1, t2), hi)


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


class _Encode:
    """map_batches callable: keep one split's rows and encode them."""

    def __init__(self, spec: DatasetSpec, lo: float, hi: float):
        self.spec, self.lo, self.hi = spec, lo, hi

    def __call__(self, table: pa.Table) -> pa.Table:
        if self.spec.time is not None and (self.lo > -np.inf or self.hi < np.inf):
            t = time_values(table[self.spec.time]) if table.num_rows else np.zeros(0, np.int64)
            keep = (t >= self.lo) & (t < self.hi)
            if not keep.all():
                table = table.filter(pa.array(keep))
        return columns_to_arrow(encode_table(table, self.spec))


def columns_to_arrow(cols: dict[str, np.ndarray]) -> pa.Table:
    """Encoded columns as one Arrow block, without copying: a 2-D array becomes a fixed-size
    list column over its buffer. (Left to Ray Data, a dict of numpy arrays is converted to its
    tensor extension type, which cost as much CPU as the encoding itself; an empty 2-D array
    even fell back to pickled objects.)"""
    out = {}
    for k, v in cols.items():
        if v.ndim == 2:
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
        if pa.types.is_fixed_size_list(arr.type):
            # flatten() honours the slice offset of a batch cut from a larger block
            out[name] = arr.flatten().to_numpy(zero_copy_only=False).reshape(len(arr), arr.type.list_size)
        else:
            out[name] = arr.to_numpy(zero_copy_only=False)
    return out


def read_split(source: DataSource, split: str, cuts: TimeCuts | None, *, shuffle_files: bool = False) -> ray.data.Dataset:
    """The encoded rows of one split (``train``/``dev``/``test``, or ``all``) as a lazy dataset.

    ``cuts`` comes from :func:`time_cuts`; pre-split datasets (``split_files``) need none."""
    if source.split_files is None and cuts is None and split != "all":
        raise ValueError(f"split {split!r} of a time-split dataset needs its time cuts (pipelines.ingest.time_cuts)")
    lo, hi = (-np.inf, np.inf) if cuts is None else cuts.bounds(split)
    ds = read_raw(source, source.spec.columns, split=split, shuffle_files=shuffle_files)
    # whole blocks (batch_size=None): a block is bounded by the configured block size
    # (pipelines/ray_env.py), and without a batch size Ray Data fuses the encoder into the
    # read task, so raw rows never pass through the object store
    return ds.map_batches(_Encode(source.spec, lo, hi), batch_format="pyarrow", batch_size=None, zero_copy_batch=True)


# Rows fetched from Ray Data per request by train_batches (at least a batch, at least the buffer)
CHUNK_ROWS = 16_384


def train_batches(ds, batch_size: int | None, shuffle_buffer: int = 0, seed: int | None = None):
    """Batches (dicts of numpy arrays) of an encoded split — a ``Dataset`` or a Ray Train
    shard's ``DataIterator`` — with a local shuffle buffer of ``shuffle_buffer`` rows.

    Rows come from Ray Data in large chunks (one request per :data:`CHUNK_ROWS` rows or more)
    and are batched here: Ray Data's own small-batch path cost 0.6–0.8 ms of the consuming
    process's CPU per 256-row batch (its local shuffle buffer included; inside the training
    worker, ~7 % of a two-worker step) and ~1 ms of the machine's: three to six times what this
    costs (``benchmarks/ingest.py --batch-cost``; figures in docs/data.md). The shuffle: every batch is a uniformly random draw,
    without replacement, from a pool of at least ``shuffle_buffer`` + ``batch_size`` rows while
    the stream lasts (the pool is the rows fetched and not yet emitted); the last rows drain in
    random order. ``shuffle_buffer`` 0 keeps the stream's order. The batches are the same in
    number and size as ``ds.iter_batches(batch_size)`` gives (the last one may be short)."""
    shuffle = bool(shuffle_buffer)
    rng = np.random.default_rng(seed)
    chunk = max(CHUNK_ROWS, batch_size or 0, 2 * shuffle_buffer)  # rows copied per row emitted: ~1 + buffer / chunk
    pool: dict[str, np.ndarray] | None = None
    for t in ds.iter_batches(batch_size=chunk, batch_format="pyarrow"):
        cols = arrow_to_columns(t)
        pool = {k: np.concatenate([pool[k], cols[k]]) for k in cols} if pool and _rows(pool) else cols
        n = _rows(pool)
        if batch_size is None:
            yield pool
            pool = None
            continue
        out = (n - shuffle_buffer) // batch_size * batch_size if shuffle else n // batch_size * batch_size
        if out <= 0:
            continue
        if shuffle:
            order = rng.permutation(n)
            yield from _slices({k: v[order[:out]] for k, v in pool.items()}, out, batch_size)
            pool = {k: v[order[out:]] for k, v in pool.items()}
        else:
            yield from _slices(pool, out, batch_size)
            pool = {k: v[out:] for k, v in pool.items()}
    if pool and _rows(pool):
        n = _rows(pool)
        if shuffle:
            order = rng.permutation(n)
            pool = {k: v[order] for k, v in pool.items()}
        yield from _slices(pool, n, batch_size or n)


def _rows(cols: dict[str, np.ndarray]) -> int:
    return len(next(iter(cols.values())))


def _slices(cols: dict[str, np.ndarray], n: int, batch_size: int):
    """Consecutive batches of ``batch_size`` rows (views) over the first ``n`` rows of ``cols``."""
    for i in range(0, n, batch_size):
        yield {k: v[i : i + batch_size] for k, v in cols.items()}


class EarlyStart:
    """A batch stream whose first batch is fetched in a background thread from construction on.

    A stream's first batch waits for Ray Data to plan the read and start its tasks; the first
    epoch of a job also waits for their worker processes (seconds, ``first_batch_s`` in the
    job's history). Built before the model and the process group are set up, that wait overlaps
    them. Iterate once; an error of the stream is raised by the iteration, as without it.
    """

    def __init__(self, batches):
        from concurrent.futures import ThreadPoolExecutor

        self._batches = iter(batches)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="adasparse-stream-start")
        self._first = self._pool.submit(next, self._batches, None)

    def __iter__(self):
        try:
            first = self._first.result()
        finally:
            self._pool.shutdown(wait=False)
        if first is not None:
            yield first
            yield from self._batches


def unwrap_data_error(err: BaseException) -> DataError | None:
    """The :class:`DataError` behind an exception raised inside a Ray task, if any."""
    seen = set()
    stack = [err]
    while stack:
        e = stack.pop()
        if id(e) in seen or e is None:
            continue
        seen.add(id(e))
        if isinstance(e, DataError):
            return e
        cause = getattr(e, "cause", None)
        if isinstance(cause, BaseException):
            stack.append(cause)
        stack.extend([e.__cause__, e.__context__])
    text = str(err)
    marker = "DataError: "
    if marker in text:  # the class did not survive the trip (e.g. wrapped as a plain exception)
        return DataError(text.split(marker, 1)[1].splitlines()[0])
    return None


__all__ = ["SPLITS", "EarlyStart", "TimeCuts", "arrow_to_columns", "columns_to_arrow", "open_source", "read_split", "read_raw", "time_cuts", "train_batches", "unwrap_data_error"]
