"""The train/dev/test splits as time ranges: the cut points of the paper's 4:1:1 split by time
(computed by :func:`pipelines.data.time_split.time_cuts`), a split's bounds, and one batch's rows
of a split. No Ray: the reader, the vocabulary pass and each worker's train stream share it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from adasparse.portable.rules import time_values
from pipelines.data.spec import DatasetSpec
from pipelines.data.sources import DataSource

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class TimeCuts:
    """Rows with time < train_end are train, < dev_end dev, the rest test."""

    start: int
    train_end: int
    dev_end: int
    stop: int
    rows: tuple[int, int, int] | None = None  # train, dev, test rows (exact: cuts fall on bin edges)

    def bounds(self, split: str) -> tuple[float, float]:
        return {
            "train": (-np.inf, self.train_end),
            "dev": (self.train_end, self.dev_end),
            "test": (self.dev_end, np.inf),
            "all": (-np.inf, np.inf),
        }[split]


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


__all__ = ["SPLITS", "TimeCuts", "keep_split", "split_bounds"]
