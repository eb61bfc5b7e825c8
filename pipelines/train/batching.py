"""Training batches from an encoded split on Ray Data: large chunks, a local shuffle buffer,
and the early start of a stream's first batch."""

from __future__ import annotations

import numpy as np

from pipelines.data.arrow_columns import arrow_to_columns

# Rows fetched from Ray Data per request by train_batches (at least a batch, at least the buffer)
CHUNK_ROWS = 16_384


def train_batches(ds, batch_size: int | None, shuffle_buffer: int = 0, seed: int | None = None):
    """Batches (dicts of numpy arrays) of an encoded split — a ``Dataset`` or a Ray Train
    shard's ``DataIterator`` — with a local shuffle buffer of ``shuffle_buffer`` rows.

    Rows come from Ray Data in large chunks (one request per :data:`CHUNK_ROWS` rows or more)
    and are batched here: Ray Data's own small-batch path (its local shuffle buffer included)
    cost several times more CPU per batch, in the training worker itself
    (``benchmarks/ingest.py --batch-cost``; figures in docs/data.md). The shuffle: every batch is a uniformly random draw,
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


__all__ = ["CHUNK_ROWS", "EarlyStart", "train_batches"]
