"""Reading a dataset's shards on Ray Data: the files of a split, only the spec's columns,
streamed (never materialised), encoded in the read task.

* ``read_parquet``/``read_csv`` over the shards, one read task per file; the train split
  shuffles file order every epoch (seeded by the run's seed and the epoch), and
  :mod:`pipelines.train.batching` adds a local shuffle buffer.
* Encoding (hashing, domain ids, label/numeric checks) runs in ``map_batches`` with
  :func:`pipelines.data.encoding.encode_table`, fused into the read task, keeping one split's
  rows by the time cuts of :mod:`pipelines.data.time_split`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import ray
import ray.data
from pyarrow.fs import FSSpecHandler, PyFileSystem

from adasparse.vocabulary import DomainVocabulary
from pipelines.data.arrow_columns import columns_to_arrow
from pipelines.data.sources import DataError, DataSource
from pipelines.data.spec import DatasetSpec
from pipelines.data.encoding import PATH_COLUMN, encode_table, time_values

if TYPE_CHECKING:
    from pipelines.data.time_split import TimeCuts

SPLITS = ("train", "dev", "test")


def _arrow_fs(source: DataSource):
    return PyFileSystem(FSSpecHandler(source.fs)) if source.spec.is_s3 else None


def read_raw(
    source: DataSource, columns: list[str], *, split: str = "all", shuffle_files: bool = False, with_paths: bool = True,
    seed: int | None = None, concurrency: int | None = None,
) -> ray.data.Dataset:
    """A lazy Ray dataset over the files of ``split`` with only ``columns`` (+ ``path``);
    ``shuffle_files``: a new file order every execution (epoch), derived from ``seed`` when given;
    ``concurrency``: at most this many read tasks at once (default: as many as the CPUs allow)."""
    all_files, rows = source.files_for(split)
    files = [f for f, n in zip(all_files, rows) if n != 0]  # zero-row shards hold nothing to read
    if not files:
        raise DataError(f"{source.spec.location}: every file is empty")
    # one read task per file: left to its size estimate Ray packed several shards into a task,
    # whose worker then peaked higher the more rows the dataset had (benchmarks/ingest.py)
    shuffle = None
    if shuffle_files:  # the seed and the execution's index (the epoch) fix the order: reruns read alike
        shuffle = "files" if seed is None else ray.data.FileShuffleConfig(seed=seed, reseed_after_execution=True)
    kw = dict(filesystem=_arrow_fs(source), include_paths=with_paths, shuffle=shuffle,
              override_num_blocks=len(files), concurrency=concurrency)
    if source.spec.format == "parquet":
        # select_columns is pushed down into the read: only these columns leave the files
        try:
            ds = ray.data.read_parquet(files, **kw)
        except Exception as err:  # Ray Data samples the files here; pyarrow's error names none of them
            from pipelines.data.validation import locate_read_error

            located = locate_read_error(source, err)
            if located is None:
                raise
            raise located from None
        return ds.select_columns(columns + ([PATH_COLUMN] if with_paths else []))
    import pyarrow.csv as pacsv

    ds = ray.data.read_csv(files, convert_options=pacsv.ConvertOptions(include_columns=columns), **kw)
    return ds


class _Encode:
    """map_batches callable: keep one split's rows and encode them."""

    def __init__(self, spec: DatasetSpec, lo: float, hi: float, vocab: DomainVocabulary | None = None):
        self.spec, self.lo, self.hi, self.vocab = spec, lo, hi, vocab

    def __call__(self, table: pa.Table) -> pa.Table:
        table = keep_split(table, self.spec, self.lo, self.hi)
        return columns_to_arrow(encode_table(table, self.spec, self.vocab))


def read_split(source: DataSource, split: str, cuts: TimeCuts | None, *, shuffle_files: bool = False,
               vocab: DomainVocabulary | None = None, seed: int | None = None,
               concurrency: int | None = None) -> ray.data.Dataset:
    """The encoded rows of one split (``train``/``dev``/``test``, or ``all``) as a lazy dataset.

    ``cuts`` comes from :func:`time_cuts`; pre-split datasets (``split_files``) need none.
    ``vocab``: the domain-aware fields' vocabulary (:mod:`pipelines.data.vocabulary_pass`); without
    it they are hashed like the other fields. ``concurrency``: at most this many read tasks at
    once (a map_batches with the same ``concurrency`` still fuses into them)."""
    lo, hi = split_bounds(source, split, cuts)
    ds = read_raw(source, source.spec.columns, split=split, shuffle_files=shuffle_files, seed=seed, concurrency=concurrency)
    # whole blocks (batch_size=None): a block is bounded by the configured block size
    # (pipelines/runtime/ray_env.py), and without a batch size Ray Data fuses the encoder into the
    # read task, so raw rows never pass through the object store
    return ds.map_batches(_Encode(source.spec, lo, hi, vocab), batch_format="pyarrow", batch_size=None, zero_copy_batch=True,
                          concurrency=concurrency)


def from_epoch(ds: ray.data.Dataset, epoch: int) -> ray.data.Dataset:
    """``ds`` whose executions count from ``epoch`` (1-based): its first execution reads the
    files in the order an uninterrupted run's ``epoch``-th execution reads them.

    A seeded file shuffle (``FileShuffleConfig(seed, reseed_after_execution=True)``) draws each
    execution's order from the seed and the dataset's execution count, which starts at 0 for
    every new worker group. A run that resumes at epoch 3 (a restarted worker group, or the
    command rerun) would otherwise read epoch 1's order in epoch 3 and end as another model
    (measured: dev AUC 0.0053 from the uninterrupted run's). The count lives in the dataset's
    own Ray Data context (``_execution_idx``, Ray 2.60); the copy is deep so the count is its own."""
    if not hasattr(ds.context, "_execution_idx"):
        raise RuntimeError("this Ray Data has no execution count (DataContext._execution_idx): "
                           "resumed runs could not read the files in their epoch's order")
    out = ray.data.Dataset.copy(ds, _deep_copy=True)
    out.context._execution_idx = epoch - 1
    return out


def split_bounds(source: DataSource, split: str, cuts: TimeCuts | None) -> tuple[float, float]:
    """The time range of ``split`` (everything for pre-split datasets and ``all``)."""
    if source.split_files is None and cuts is None and split != "all":
        raise ValueError(f"split {split!r} of a time-split dataset needs its time cuts (pipelines.data.time_split.time_cuts)")
    return (-np.inf, np.inf) if cuts is None else cuts.bounds(split)


def keep_split(table: pa.Table, spec: DatasetSpec, lo: float, hi: float) -> pa.Table:
    """The rows of ``table`` whose time lies in [lo, hi)."""
    if spec.time is None or (lo == -np.inf and hi == np.inf) or not table.num_rows:
        return table
    t = time_values(table[spec.time])
    keep = (t >= lo) & (t < hi)
    return table if keep.all() else table.filter(pa.array(keep))


__all__ = ["SPLITS", "from_epoch", "keep_split", "read_raw", "read_split", "split_bounds"]
