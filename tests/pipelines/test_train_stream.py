"""Each worker's own train stream (pipelines/data/train_stream.py): every train row exactly once per
epoch for any number of workers, the same batches when resumed from any position, every row
still exactly once when resumed with another number of workers. No Ray."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.data.sources import open_source
from pipelines.data.spec import DatasetSpec
from pipelines.data.train_stream import EpochPlan, PieceReader, TrainPieces, WorkerStream, deal, expected_rows, windows

TRAIN_BEFORE = 700  # rows with time < 700 are the train split below


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Five Parquet files of very unequal sizes (40 … 900 rows) in row groups of 64 rows (one
    file a single small group); ``uid`` numbers every row; times scattered over 0–999, but the
    last file's all at 800 or later (none of them train rows)."""
    d = tmp_path_factory.mktemp("stream")
    sizes = [900, 40, 333, 610, 64]
    start = 0
    for i, n in enumerate(sizes):
        uid = np.arange(start, start + n)
        rng = np.random.default_rng(i)
        ts = (uid * 7919) % 1000 if i < 4 else 800 + np.arange(n)
        t = pa.table({"uid": uid.astype(np.float64), "ts": ts, "y": rng.integers(0, 2, n),
                      "dom": rng.integers(0, 5, n)})
        pq.write_table(t, d / f"part-{i}.parquet", row_group_size=64)
        start += n
    spec = DatasetSpec(location=str(d), label="y", time="ts", domain_fields=[{"name": "dom", "buckets": 8}],
                       numeric_fields=["uid"])
    source = open_source(spec)
    everything = pa.concat_tables([pq.read_table(d / f"part-{i}.parquet") for i in range(len(sizes))])
    train_uids = np.sort(everything["uid"].to_numpy()[everything["ts"].to_numpy() < TRAIN_BEFORE]).astype(np.int64)
    return source, train_uids


def _reader(source):
    return PieceReader(source.spec, source.fs, source.files, (-np.inf, TRAIN_BEFORE))


def _pieces(source):
    return TrainPieces.of(source, "train", (-np.inf, TRAIN_BEFORE))


def _epoch(source, workers, epoch=1, batch=50, window_rows=150, start=None, streams_of=None):
    pieces = _pieces(source)
    plan = EpochPlan.make(pieces, seed=3, epoch=epoch, streams=workers if streams_of is None else streams_of,
                          window_rows=window_rows)
    out = []
    for rank in range(workers):
        s = WorkerStream(_reader(source), plan, pieces, seed=3, streams=plan.owned(rank, workers), batch_size=batch,
                         start=start)
        out.append([b["numeric"][:, 0].astype(np.int64) for b in s])
    return out


def test_pieces_are_the_row_groups_weighted_by_their_rows_in_the_split(dataset):
    source, train_uids = dataset
    every = TrainPieces.of(source)
    assert every.pieces[:, 2].sum() == 900 + 40 + 333 + 610 + 64
    assert len(every.pieces) == sum(-(-n // 64) for n in (900, 40, 333, 610, 64))
    train = _pieces(source)  # the last file's only group lies after the split: not a piece
    assert len(train.pieces) == len(every.pieces) - 1 and 4 not in train.pieces[:, 0]
    assert abs(train.pieces[:, 2].sum() - len(train_uids)) < 0.05 * len(train_uids)  # ≈ 70 % of each group's rows
    assert TrainPieces.from_state(train.to_state()).pieces.tolist() == train.pieces.tolist()


def test_expected_rows_of_a_group_in_a_time_range():
    assert expected_rows(100, 0, 99, (-np.inf, 50)) == 50
    assert expected_rows(100, 0, 99, (50, np.inf)) == 50
    assert expected_rows(100, 60, 99, (-np.inf, 50)) == 0 and expected_rows(100, 0, 49, (50, 80)) == 0
    assert expected_rows(100, 0, 99, (99, 100)) == 1
    assert expected_rows(100, None, None, (0, 1)) == 100  # no statistics: every row may be inside
    # fractional times count as their integer part (toward 0): -0.5 is time 0, 49.5 is 49
    assert expected_rows(10, -0.5, -0.2, (0, 50)) >= 1 and expected_rows(10, 49.5, 49.9, (-np.inf, 50)) >= 1
    assert expected_rows(10, -1.0, -1.0, (0, 50)) == 0 and expected_rows(10, 51.0, 60.5, (-np.inf, 50)) == 0


def test_the_deal_is_balanced_seeded_and_changes_with_the_epoch():
    w = np.array([64.0] * 30 + [10.0, 5.0])
    a, b = deal(w, 1, 1, 3), deal(w, 1, 1, 3)
    assert [x.tolist() for x in a] == [x.tolist() for x in b]
    assert sorted(np.concatenate(a).tolist()) == list(range(len(w)))
    loads = [w[x].sum() for x in a]
    assert max(loads) - min(loads) <= w.max()
    assert [x.tolist() for x in deal(w, 1, 2, 3)] != [x.tolist() for x in a]
    assert [len(x) for x in windows(np.arange(10), np.full(10, 64.0), 150)] == [3, 3, 3, 1]


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_every_train_row_once_per_epoch_for_any_number_of_workers(dataset, workers):
    source, train_uids = dataset
    per_worker = _epoch(source, workers)
    got = np.sort(np.concatenate([np.concatenate(b) for b in per_worker]))
    assert got.tolist() == train_uids.tolist()
    for batches in per_worker:  # full batches but the worker's last
        assert all(len(b) == 50 for b in batches[:-1]) and 0 < len(batches[-1]) <= 50


def test_epochs_are_shuffled_differently_and_reproducibly(dataset):
    source, _ = dataset
    one, again, two = _epoch(source, 2, epoch=1), _epoch(source, 2, epoch=1), _epoch(source, 2, epoch=2)
    flat = [np.concatenate(b).tolist() for b in one]
    assert flat == [np.concatenate(b).tolist() for b in again]
    assert flat != [np.concatenate(b).tolist() for b in two]
    assert sorted(sum(flat, [])) == sorted(sum([np.concatenate(b).tolist() for b in two], []))


def test_resumed_at_any_batch_the_rest_of_the_epoch_is_the_same_batches(dataset):
    source, _ = dataset
    pieces = _pieces(source)
    plan = EpochPlan.make(pieces, seed=3, epoch=1, streams=2, window_rows=150)
    whole = _epoch(source, 2)
    for k in (0, 1, 3, 5, len(whole[0]) - 1):
        positions = {}
        for rank in range(2):  # run each worker to k batches and take its position
            s = WorkerStream(_reader(source), plan, pieces, seed=3, streams=[rank], batch_size=50)
            it = iter(s)
            for _ in range(min(k, len(whole[rank]))):
                next(it)
            positions |= s.position()
            it.close()
        for rank in range(2):
            rest = WorkerStream(_reader(source), plan, pieces, seed=3, streams=[rank], batch_size=50, start=positions)
            got = [b["numeric"][:, 0].astype(np.int64).tolist() for b in rest]
            assert got == [b.tolist() for b in whole[rank][k:]], (k, rank)


def test_resumed_with_another_number_of_workers_every_row_still_once(dataset):
    """Two streams, stopped after 3 and 5 batches; the rest read by 3 workers (then 1)."""
    source, train_uids = dataset
    pieces = _pieces(source)
    plan = EpochPlan.make(pieces, seed=3, epoch=1, streams=2, window_rows=150)
    done, positions = [], {}
    for rank, k in ((0, 3), (1, 5)):
        s = WorkerStream(_reader(source), plan, pieces, seed=3, streams=[rank], batch_size=50)
        it = iter(s)
        done += [next(it)["numeric"][:, 0].astype(np.int64) for _ in range(k)]
        positions |= s.position()
        it.close()
    for workers in (3, 1):
        rest = []
        for rank in range(workers):
            s = WorkerStream(_reader(source), plan, pieces, seed=3, streams=plan.owned(rank, workers), batch_size=50,
                             start=positions)
            rest += [b["numeric"][:, 0].astype(np.int64) for b in s]
        assert np.sort(np.concatenate(done + rest)).tolist() == train_uids.tolist()


def test_an_unreadable_piece_is_one_line_naming_the_file_and_group(dataset, tmp_path):
    source, _ = dataset
    reader = PieceReader(source.spec, source.fs, [str(tmp_path / "gone.parquet")], (-np.inf, np.inf))
    with pytest.raises(Exception, match=r"gone\.parquet \(row group 2\): unreadable: "):
        reader.read(np.array([0, 2, 64]))


def test_csv_files_are_whole_pieces_and_every_train_row_comes_once(tmp_path):
    """CSV has no row groups or footers: each file is one piece of unknown rows (balanced as
    the mean), read whole."""
    import pyarrow.csv as pacsv

    start = 0
    for i, n in enumerate([120, 7, 300]):
        uid = np.arange(start, start + n)
        pacsv.write_csv(pa.table({"uid": uid.astype(np.float64), "ts": (uid * 7919) % 1000, "y": uid % 2, "dom": uid % 5}),
                        tmp_path / f"part-{i}.csv")
        start += n
    spec = DatasetSpec(location=str(tmp_path), format="csv", label="y", time="ts",
                       domain_fields=[{"name": "dom", "buckets": 8}], numeric_fields=["uid"])
    source = open_source(spec)
    pieces = TrainPieces.of(source, "train", (-np.inf, TRAIN_BEFORE))
    assert pieces.pieces.tolist() == [[0, -1, -1], [1, -1, -1], [2, -1, -1]]
    uid = np.arange(start)
    want = np.sort(uid[(uid * 7919) % 1000 < TRAIN_BEFORE])
    got = _epoch(source, 2)
    assert np.sort(np.concatenate([np.concatenate(b) for b in got])).tolist() == want.tolist()


def test_windows_without_rows_of_the_split_are_passed_and_positions_still_resume(dataset):
    """A narrow time range: most windows hold none of its rows (their statistics overlap it, their
    rows do not); batches span the windows that do, and a resumed stream gives the same rest."""
    source, _ = dataset
    bounds = (700, 720)
    pieces = TrainPieces.of(source, "train", bounds)
    plan = EpochPlan.make(pieces, seed=5, epoch=1, streams=2, window_rows=10)  # a window per row group
    reader = PieceReader(source.spec, source.fs, source.files, bounds)
    whole = [[b["numeric"][:, 0].astype(np.int64).tolist() for b in
              WorkerStream(reader, plan, pieces, seed=5, streams=[r], batch_size=3)] for r in range(2)]
    got = sorted(sum(sum(whole, []), []))
    table = pa.concat_tables([pq.read_table(f) for f in source.files])
    ts, uid = table["ts"].to_numpy(), table["uid"].to_numpy().astype(np.int64)
    assert got == sorted(uid[(ts >= 700) & (ts < 720)].tolist()) and len(got) > 3
    for rank in range(2):
        s = WorkerStream(reader, plan, pieces, seed=5, streams=[rank], batch_size=3)
        it = iter(s)
        next(it)
        rest = WorkerStream(reader, plan, pieces, seed=5, streams=[rank], batch_size=3, start=s.position())
        it.close()
        assert [b["numeric"][:, 0].astype(np.int64).tolist() for b in rest] == whole[rank][1:]


@pytest.mark.parametrize("workers", [1, 2, 3, 7])
def test_each_worker_reads_its_share_of_an_evaluation_split_every_row_once(dataset, workers, monkeypatch):
    """Dev and test (pipelines/train/eval_reader.py): the split's pieces dealt the same way on
    every worker, every row of the split to exactly one worker for any number of workers; a
    small share is read once and then served from memory."""
    from pipelines.train import eval_reader
    from pipelines.train.eval_reader import EvalReader
    from pipelines.train.worker_config import TrainData

    source, _ = dataset
    bounds = (TRAIN_BEFORE, np.inf)  # "dev": every row from time 700 on
    data = TrainData(TrainPieces.of(source, "train", bounds), source.spec, source.fs, bounds)
    table = pa.concat_tables([pq.read_table(f) for f in source.files])
    want = np.sort(table["uid"].to_numpy()[table["ts"].to_numpy() >= TRAIN_BEFORE]).astype(np.int64)
    readers = [EvalReader(data, rank, workers, None, batch_rows=37) for rank in range(workers)]
    first = [[b["numeric"][:, 0].astype(np.int64) for b in r] for r in readers]
    assert all(len(b) <= 37 for parts in first for b in parts)
    got = np.sort(np.concatenate([b for parts in first for b in parts]))
    assert np.array_equal(got, want)  # every row once, none outside the split
    calls = []
    monkeypatch.setattr(PieceReader, "read", lambda self, piece: calls.append(piece))
    again = [[b["numeric"][:, 0].astype(np.int64) for b in r] for r in readers]
    assert not calls and all(np.array_equal(np.concatenate(a or [np.empty(0)]), np.concatenate(f or [np.empty(0)]))
                             for a, f in zip(again, first))  # the second pass from memory, the same rows
    monkeypatch.setattr(eval_reader, "CACHE_ROWS", 10)  # shares over the cap are read on every pass
    big = EvalReader(data, 0, workers, None, batch_rows=37)
    assert not big.keep or not big.share
