"""Batches of an encoded split on Ray Data (the workers' dev and test shards), and the early
start of a stream's first batch."""

from __future__ import annotations

import numpy as np

from pipelines.data.arrow_columns import arrow_to_columns

# Rows fetched from Ray Data per request by split_batches (at least a batch)
CHUNK_ROWS = 16_384


def split_batches(ds, batch_size: int | None):
    """Batches (dicts of numpy arrays) of an encoded split — a ``Dataset`` or a Ray Train
    shard's ``DataIterator`` — in the stream's order.

    Rows come from Ray Data in large chunks (one request per :data:`CHUNK_ROWS` rows or more)
    and are batched here: Ray Data's own small-batch path cost several times more CPU per batch
    (``benchmarks/ingest.py --batch-cost``; figures in docs/data.md). The batches are the same in
    number and size as ``ds.iter_batches(batch_size)`` gives (the last one may be short);
    ``batch_size`` None: each chunk as it comes."""
    chunk = max(CHUNK_ROWS, batch_size or 0)
    pool: dict[str, np.ndarray] | None = None
    for t in ds.iter_batches(batch_size=chunk, batch_format="pyarrow"):
        cols = arrow_to_columns(t)
        pool = {k: np.concatenate([pool[k], cols[k]]) for k in cols} if pool and _rows(pool) else cols
        if batch_size is None:
            yield pool
            pool = None
            continue
        out = _rows(pool) // batch_size * batch_size
        if out > 0:
            yield from _slices(pool, out, batch_size)
            pool = {k: v[out:] for k, v in pool.items()}
    if pool and _rows(pool):
        n = _rows(pool)
        yield from _slices(pool, n, batch_size or n)


def _rows(cols: dict[str, np.ndarray]) -> int:
    return len(next(iter(cols.values())))


def _slices(cols: dict[str, np.ndarray], n: int, batch_size: int):
    """Consecutive batches of ``batch_size`` rows (views) over the first ``n`` rows of ``cols``."""
    for i in range(0, n, batch_size):
        yield {k: v[i : i + batch_size] for k, v in cols.items()}


class EarlyStart:
    """A batch stream whose first batch is fetched in a background thread from construction on.

    A stream's first batch waits for the reads to start (and, on Ray Data, for its worker
    processes: seconds, ``first_batch_s`` in the job's history). Built before the model and the
    process group are set up, that wait overlaps them. Iterate once; an error of the stream is
    raised by the iteration, as without it.
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


__all__ = ["CHUNK_ROWS", "EarlyStart", "split_batches"]
