"""How each worker reads its share of the dev and test splits: the split's pieces (the row
groups that hold rows of its time range; a CSV file is one piece) dealt once, the same way on
every worker, so every row goes to exactly one worker for any number of workers; each worker
reads and encodes its pieces itself with the job's own encoder
(:class:`pipelines.data.train_stream.PieceReader`, as the train stream does), a thread reading
one piece ahead. A share of at most :data:`CACHE_ROWS` rows stays in the worker's memory after
its first full pass, so dev, evaluated after every epoch, is read once per run.

No Ray Data pipeline: starting one cost seconds per evaluation (7.6 s for the first dev
evaluation of a 100k-row run, 3.8 s for the test one: docs/scale.md)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import numpy as np

from pipelines.data.train_stream import BATCH_KEYS, deal
from pipelines.train.worker_config import TrainData

EVAL_SPLITS = ("dev", "test")
CACHE_ROWS = 2_000_000  # rows of a worker's share kept encoded in memory (~100 bytes a row with 20 fields)


def cut(arrays: dict[str, np.ndarray], rows: int) -> Iterator[dict[str, np.ndarray]]:
    """``arrays`` in batches of at most ``rows`` rows (views, no copies)."""
    n = len(arrays["label"])
    for start in range(0, n, rows):
        yield {k: arrays[k][start : start + rows] for k in BATCH_KEYS}


class EvalReader:
    """Worker ``rank`` of ``world``'s share of one evaluation split, as batches of ``batch_rows``."""

    def __init__(self, data: TrainData, rank: int, world: int, vocab, batch_rows: int):
        weights = data.pieces.weights()
        self.share = [int(p) for p in deal(weights, 0, 0, world)[rank]] if len(weights) else []
        self.keep = float(weights[self.share].sum()) <= CACHE_ROWS if self.share else True
        self.data, self.vocab, self.batch_rows = data, vocab, batch_rows
        self.cached: dict[str, np.ndarray] | None = None

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        if self.cached is not None:
            yield from cut(self.cached, self.batch_rows)
            return
        parts = []
        for arrays in self._pieces():
            if self.keep:
                parts.append(arrays)
            yield from cut(arrays, self.batch_rows)
        if self.keep and parts:  # a full pass: the share stays in memory
            self.cached = {k: np.concatenate([p[k] for p in parts]) for k in BATCH_KEYS} if len(parts) > 1 else parts[0]

    def _pieces(self) -> Iterator[dict[str, np.ndarray]]:
        """The share's pieces, encoded, in order; the next one read while this one is used."""
        if not self.share:
            return
        reader = self.data.reader(self.vocab)
        rows = self.data.pieces.pieces
        with ThreadPoolExecutor(1, thread_name_prefix="eval-read") as pool:
            ahead = pool.submit(reader.read, rows[self.share[0]])
            for k in range(len(self.share)):
                arrays = ahead.result()
                if k + 1 < len(self.share):
                    ahead = pool.submit(reader.read, rows[self.share[k + 1]])
                if len(arrays["label"]):
                    yield arrays


__all__ = ["CACHE_ROWS", "EVAL_SPLITS", "EvalReader", "cut"]
