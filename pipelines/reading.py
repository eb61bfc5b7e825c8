"""Reading a dataset's shards on Ray Data: the files of a split, only the spec's columns,
streamed (never materialised), encoded in the read task.

* ``read_parquet``/``read_csv`` over the shards, one read task per file; the train split
  shuffles file order every epoch (``shuffle="files"``), and :mod:`pipelines.batching` adds a
  local shuffle buffer.
* Encoding (hashing, domain ids, label/numeric checks) runs in ``map_batches`` with
  :func:`pipelines.transforms.encode_table`, fused into the read task, keeping one split's
  rows by the time cuts of :mod:`pipelines.time_split`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import ray
import ray.data
from pyarrow.fs import FSSpecHandler, PyFileSystem

from pipelines.arrow_columns import columns_to_arrow
from pipelines.sources import DataError, DataSource
from pipelines.spec import DatasetSpec
from pipelines.transforms import PATH_COLUMN, encode_table, time_values

if TYPE_CHECKING:
    from pipelines.time_split import TimeCuts

SPLITS = ("train", "dev", "test")


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


def read_split(source: DataSource, split: str, cuts: TimeCuts | None, *, shuffle_files: bool = False) -> ray.data.Dataset:
    """The encoded rows of one split (``train``/``dev``/``test``, or ``all``) as a lazy dataset.

    ``cuts`` comes from :func:`time_cuts`; pre-split datasets (``split_files``) need none."""
    if source.split_files is None and cuts is None and split != "all":
        raise ValueError(f"split {split!r} of a time-split dataset needs its time cuts (pipelines.time_split.time_cuts)")
    lo, hi = (-np.inf, np.inf) if cuts is None else cuts.bounds(split)
    ds = read_raw(source, source.spec.columns, split=split, shuffle_files=shuffle_files)
    # whole blocks (batch_size=None): a block is bounded by the configured block size
    # (pipelines/ray_env.py), and without a batch size Ray Data fuses the encoder into the
    # read task, so raw rows never pass through the object store
    return ds.map_batches(_Encode(source.spec, lo, hi), batch_format="pyarrow", batch_size=None, zero_copy_batch=True)


__all__ = ["SPLITS", "read_raw", "read_split"]
