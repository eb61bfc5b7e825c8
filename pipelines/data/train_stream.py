"""Each worker's own stream of the train split: a seeded deal of row groups per epoch, read with
pyarrow in the worker, with a position that a mid-epoch checkpoint keeps and a restart resumes.

Why not Ray Data's streaming split for training: it hands blocks to whichever worker asks
first (and, across nodes, by locality), so which rows a worker trained on before a failure
depends on timing, and Ray Data cannot resume a stream mid-way (ray-project/ray#37633). Here
an epoch's rows are a function of (seed, epoch, number of streams) alone:

* **pieces**: the train files' Parquet row groups (a CSV file is one piece), weighted by the
  rows they hold of the split — from the footers, read once by the driver: the group's rows
  times the share of its time range (statistics) inside the split's; a group wholly outside
  the split is never read;
* **the deal** (:func:`deal`): the pieces in a seeded random order per epoch, each to the stream
  with the fewest rows so far — one stream per worker, balanced to within a piece;
* **windows** (:func:`windows`): a stream's consecutive pieces grouped until they hold at least
  ``window_rows`` rows; a window's rows (those of the split, by the time cuts) are permuted with
  a seed of (seed, epoch, stream, window) — the local shuffle;
* **batches** (:class:`WorkerStream`): a worker's streams' windows one after the other, cut into
  batches of ``batch_size`` rows (a batch may span windows; the worker's last one may be short);
  a background thread reads and encodes ahead (``prefetch`` windows);
* **position**: per stream, the window and the offset in it of the next row not yet trained
  on. A worker group that restarts with as many workers reads each stream from its position:
  the same batches as without the failure. With another number of workers, the epoch's
  remaining rows are the streams' remainders, dealt to the new workers (stream ``s`` to worker
  ``s mod workers``): every row still exactly once, in other batches. The next epoch is dealt to
  the new number.

Streams differ in rows by up to a piece, so workers take different numbers of steps: the
gradient exchange weighs each worker by its rows and a worker out of data takes part with
weight 0 until every worker is out (:mod:`adasparse.loop`, :class:`adasparse.distributed.GradientAverager`).
"""

from __future__ import annotations

import heapq
import queue
import threading
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pyarrow as pa

from pipelines.data.sources import DataError, DataSource
from pipelines.data.spec import DatasetSpec

BATCH_KEYS = ("cat_ids", "numeric", "label", "domain")


@dataclass
class TrainPieces:
    """The train split's pieces: ``files`` and, per piece, (file index, row group or -1 for the
    whole file, rows or -1 when unknown)."""

    files: list[str]
    pieces: np.ndarray  # (P, 3) int64

    @classmethod
    def of(cls, source: DataSource, split: str = "train",
           bounds: tuple[float, float] = (-np.inf, np.inf)) -> "TrainPieces":
        """The pieces of ``split`` whose rows may lie in the time range ``bounds``, weighted by
        the rows they are expected to hold in it."""
        files, _ = source.files_for(split)
        index = {f: i for i, f in enumerate(source.files)}
        groups = source.row_groups or [[[-1, None, None]]] * len(source.files)
        rows = []
        for j, f in enumerate(files):
            for g, (n, lo, hi) in enumerate(groups[index[f]]):
                if n < 0:  # CSV: the file is one piece of unknown rows
                    rows.append((j, -1, -1))
                    continue
                n = expected_rows(n, lo, hi, bounds)
                if n > 0:
                    rows.append((j, g, n))
        return cls(list(files), np.asarray(rows, dtype=np.int64).reshape(-1, 3))

    def weights(self) -> np.ndarray:
        """Rows per piece for balancing (unknown: the mean of the known, else 1)."""
        w = self.pieces[:, 2].astype(np.float64)
        known = w >= 0
        w[~known] = w[known].mean() if known.any() else 1.0
        return w

    def to_state(self) -> dict:
        """Plain data for the workers' config (the pieces stay one int64 array: 24 bytes each)."""
        return {"files": self.files, "pieces": self.pieces}

    @classmethod
    def from_state(cls, d: dict) -> "TrainPieces":
        return cls(list(d["files"]), np.asarray(d["pieces"], dtype=np.int64).reshape(-1, 3))


def expected_rows(rows: int, lo: float | None, hi: float | None, bounds: tuple[float, float]) -> int:
    """Rows of a row group expected in the time range ``bounds`` = [start, stop): 0 when its
    times [lo, hi] lie wholly outside (exact: nothing of it is read), else its rows times the
    share of its time range inside, at least 1; all its rows without statistics. Times are
    compared as the split compares them, truncated to integers: a fractional time x counts as
    int(x), which lies in (x − 1, x + 1)."""
    if rows <= 0 or lo is None or hi is None:
        return rows
    start, stop = bounds
    whole = float(lo).is_integer() and float(hi).is_integer()
    if (hi < start or lo >= stop) if whole else (hi <= start - 1 or lo >= stop + 1):
        return 0
    inside = min(stop, hi + 1) - max(start, lo)
    return max(1, int(round(rows * max(inside, 0) / (hi + 1 - lo))))


def deal(weights: np.ndarray, seed: int, epoch: int, streams: int) -> list[np.ndarray]:
    """Piece indices of each of ``streams`` streams for ``epoch``: the pieces in a seeded order,
    each to the stream with the fewest rows so far (ties: the lowest stream)."""
    order = np.random.default_rng([seed, epoch, 0x7EA1]).permutation(len(weights))
    heap = [(0.0, s) for s in range(streams)]
    out: list[list[int]] = [[] for _ in range(streams)]
    for p in order.tolist():
        load, s = heapq.heappop(heap)
        out[s].append(p)
        heapq.heappush(heap, (load + float(weights[p]), s))
    return [np.asarray(o, dtype=np.int64) for o in out]


def windows(pieces: np.ndarray, weights: np.ndarray, window_rows: int) -> list[np.ndarray]:
    """A stream's pieces grouped in order into windows of at least ``window_rows`` rows (by
    weight; the last may hold fewer). ``window_rows`` 0: one piece per window."""
    out, cur, held = [], [], 0.0
    for p in pieces.tolist():
        cur.append(p)
        held += float(weights[p])
        if held >= window_rows:
            out.append(np.asarray(cur, dtype=np.int64))
            cur, held = [], 0.0
    if cur:
        out.append(np.asarray(cur, dtype=np.int64))
    return out


@dataclass
class EpochPlan:
    """An epoch's streams: per stream, its windows (piece indices)."""

    epoch: int
    streams: list[list[np.ndarray]]

    @classmethod
    def make(cls, pieces: TrainPieces, seed: int, epoch: int, streams: int, window_rows: int) -> "EpochPlan":
        w = pieces.weights()
        return cls(epoch, [windows(s, w, window_rows) for s in deal(w, seed, epoch, streams)])

    def owned(self, rank: int, workers: int) -> list[int]:
        """The streams worker ``rank`` of ``workers`` reads (its own when they are as many)."""
        return [s for s in range(len(self.streams)) if s % workers == rank]


class PieceReader:
    """Reads one piece of the train split and encodes its rows (the job's encoder, the run's
    vocabulary; only the rows inside the split's time range)."""

    def __init__(self, spec: DatasetSpec, fs, files: list[str], bounds: tuple[float, float], vocab=None):
        self.spec, self.fs, self.files, self.bounds, self.vocab = spec, fs, files, bounds, vocab
        protocol = getattr(fs, "protocol", "file")
        self._local = "file" in (protocol if isinstance(protocol, (tuple, list)) else (protocol,))

    def _table(self, path: str, group: int) -> pa.Table:
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        cols = self.spec.columns
        if self.spec.format == "parquet":
            if self._local:
                return pq.ParquetFile(path).read_row_group(group, columns=cols)
            with self.fs.open(path, "rb") as fh:
                return pq.ParquetFile(fh).read_row_group(group, columns=cols)
        with self.fs.open(path, "rb") as fh:
            return pacsv.read_csv(fh, convert_options=pacsv.ConvertOptions(include_columns=cols))

    def read(self, piece: np.ndarray) -> dict[str, np.ndarray]:
        from pipelines.data.splits import keep_split
        from pipelines.data.encoding import encode_table

        f, group = int(piece[0]), int(piece[1])
        path = self.files[f]
        where = path if group < 0 else f"{path} (row group {group})"
        try:
            table = self._table(path, max(group, 0))
        except (pa.ArrowInvalid, OSError) as err:
            first = (str(err).strip() or type(err).__name__).splitlines()[0]
            raise DataError(f"{where}: unreadable: {first}") from None
        table = keep_split(table, self.spec, *self.bounds)
        try:
            cols = encode_table(table, self.spec, self.vocab)
        except DataError as err:  # the encoder names "batch" where Ray Data's path column is absent
            text = str(err)
            raise DataError(f"{where}{text[len('batch'):]}" if text.startswith("batch:") else text) from None
        return {k: cols[k] for k in BATCH_KEYS}


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts]) for k in BATCH_KEYS}


def window_rows_of(reader: PieceReader, plan: EpochPlan, pieces: TrainPieces, seed: int, stream: int,
                   window: int, shuffle: bool = True) -> dict[str, np.ndarray]:
    """A window's rows, read, encoded and permuted with the seed of (seed, epoch, stream, window)
    (``shuffle`` False: in the files' order)."""
    parts = [reader.read(pieces.pieces[p]) for p in plan.streams[stream][window].tolist()]
    cols = _concat(parts) if parts else {k: np.zeros(0) for k in BATCH_KEYS}
    if not shuffle:
        return cols
    n = len(cols["label"])
    order = np.random.default_rng([seed, plan.epoch, stream, window, 0x5F1E]).permutation(n)
    return {k: v[order] for k, v in cols.items()}


class WorkerStream:
    """One worker's batches for one epoch: its streams from their positions (``start``: stream →
    (window, offset); absent: the start), windows read ``prefetch`` ahead in a thread.
    :meth:`position` is where the batches yielded so far end. Iterate once."""

    def __init__(self, reader: PieceReader, plan: EpochPlan, pieces: TrainPieces, *, seed: int, streams: list[int],
                 batch_size: int, start: dict[int, tuple[int, int]] | None = None, prefetch: int = 2, shuffle: bool = True):
        self.reader, self.plan, self.pieces, self.seed = reader, plan, pieces, seed
        self.streams, self.batch_size, self.prefetch = list(streams), batch_size, max(1, prefetch)
        start = start or {}
        self._pos = {s: list(start.get(s, (0, 0))) for s in self.streams}
        self._stop = threading.Event()
        self.shuffle = shuffle

    def position(self) -> dict[int, tuple[int, int]]:
        """Per owned stream: (window, offset) of the next row not yet yielded."""
        return {s: (w, o) for s, (w, o) in self._pos.items()}

    def _segments(self) -> Iterator[tuple[int, int, int, dict[str, np.ndarray]]]:
        """(stream, window, first offset, rows from it) in reading order."""
        for s in self.streams:
            w0, o0 = self._pos[s]
            for w in range(w0, len(self.plan.streams[s])):
                if self._stop.is_set():
                    return
                rows = window_rows_of(self.reader, self.plan, self.pieces, self.seed, s, w, self.shuffle)
                skip = o0 if w == w0 else 0
                yield s, w, skip, {k: v[skip:] for k, v in rows.items()}

    def _prefetched(self) -> Iterator[tuple[int, int, int, dict[str, np.ndarray]]]:
        q: queue.Queue = queue.Queue(self.prefetch)
        end = object()

        def produce() -> None:
            try:
                for seg in self._segments():
                    while not self._stop.is_set():
                        try:
                            q.put(seg, timeout=0.1)
                            break
                        except queue.Full:
                            continue
            except BaseException as err:  # noqa: BLE001 - raised again by the consumer
                q.put(err)
                return
            q.put(end)

        thread = threading.Thread(target=produce, name="adasparse-train-stream", daemon=True)
        thread.start()
        try:
            while True:
                item = q.get()
                if item is end:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self._stop.set()

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        pending: list[tuple[int, int, int, dict[str, np.ndarray]]] = []  # (stream, window, offset, rows left)
        held = 0
        b = self.batch_size
        for s, w, off, rows in self._prefetched():
            n = len(rows["label"])
            if n == 0:  # a window without rows of the split: passed
                if not pending:
                    self._pos[s] = [w + 1, 0]
                else:
                    pending.append((s, w, off, rows))
                continue
            pending.append((s, w, off, rows))
            held += n
            while held >= b:
                yield self._take(pending, b)
                held -= b
        if held:
            yield self._take(pending, held)

    def _take(self, pending: list, n: int) -> dict[str, np.ndarray]:
        """The next ``n`` rows from the pending segments; the positions move past them."""
        parts = []
        while n > 0 or (pending and len(pending[0][3]["label"]) == 0):
            s, w, off, rows = pending[0]
            have = len(rows["label"])
            k = min(n, have)
            if k:
                parts.append({key: v[:k] for key, v in rows.items()})
            n -= k
            if k == have:
                pending.pop(0)
                self._pos[s] = [w + 1, 0]
            else:
                pending[0] = (s, w, off + k, {key: v[k:] for key, v in rows.items()})
                self._pos[s] = [w, off + k]
        return _concat(parts)


__all__ = ["EpochPlan", "PieceReader", "TrainPieces", "WorkerStream", "deal", "expected_rows", "window_rows_of", "windows"]
