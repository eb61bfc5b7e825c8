"""Reading a dataset's shards on Ray Data for evaluation, scoring and the pre-training passes:
the files of a split, only the spec's columns, streamed (never materialised), encoded in the
read task. (Training reads each worker's own stream instead: :mod:`pipelines.data.train_stream`.)

* ``read_parquet``/``read_csv`` over the shards, one read task per file;
* encoding (hashing, domain ids, the data rules of :mod:`adasparse.portable.rules`) runs in
  ``map_batches`` with :func:`pipelines.data.encoding.encode_table`, fused into the read task,
  keeping one split's rows by the time cuts of :mod:`pipelines.data.splits`.
"""

from __future__ import annotations

import pyarrow as pa
import ray
import ray.data
from pyarrow.fs import FSSpecHandler, PyFileSystem

from adasparse.vocabulary import DomainVocabulary
from pipelines.data.arrow_columns import columns_to_arrow
from pipelines.data.encoding import PATH_COLUMN, encode_table
from pipelines.data.sources import DataError, DataSource
from pipelines.data.spec import DatasetSpec
from pipelines.data.splits import TimeCuts, keep_split, split_bounds


def _arrow_fs(source: DataSource):
    return PyFileSystem(FSSpecHandler(source.fs)) if source.spec.is_s3 else None


def read_raw(
    source: DataSource, columns: list[str], *, split: str = "all", with_paths: bool = True, concurrency: int | None = None,
) -> ray.data.Dataset:
    """A lazy Ray dataset over the files of ``split`` with only ``columns`` (+ ``path``);
    ``concurrency``: at most this many read tasks at once (default: as many as the CPUs allow)."""
    all_files, rows = source.files_for(split)
    files = [f for f, n in zip(all_files, rows) if n != 0]  # zero-row shards hold nothing to read
    if not files:
        raise DataError(f"{source.spec.location}: every file is empty")
    # one read task per file: a task's memory stays one shard's, whatever the dataset's size
    # (docs/data.md, "one read task per file")
    kw = dict(filesystem=_arrow_fs(source), include_paths=with_paths,
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


def read_split(source: DataSource, split: str, cuts: TimeCuts | None, *, vocab: DomainVocabulary | None = None,
               concurrency: int | None = None) -> ray.data.Dataset:
    """The encoded rows of one split (``train``/``dev``/``test``, or ``all``) as a lazy dataset.

    ``cuts`` comes from :func:`time_cuts`; pre-split datasets (``split_files``) need none.
    ``vocab``: the domain-aware fields' vocabulary (:mod:`pipelines.data.vocabulary_pass`); without
    it they are hashed like the other fields. ``concurrency``: at most this many read tasks at
    once (a map_batches with the same ``concurrency`` still fuses into them)."""
    lo, hi = split_bounds(source, split, cuts)
    ds = read_raw(source, source.spec.columns, split=split, concurrency=concurrency)
    # whole blocks (batch_size=None): a block is bounded by the configured block size
    # (pipelines/runtime/ray_env.py), and without a batch size Ray Data fuses the encoder into the
    # read task, so raw rows never pass through the object store
    return ds.map_batches(_Encode(source.spec, lo, hi, vocab), batch_format="pyarrow", batch_size=None, zero_copy_batch=True,
                          concurrency=concurrency)


__all__ = ["read_raw", "read_split"]
