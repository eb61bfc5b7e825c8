"""The pre-training passes over a small dataset, read in this process: no Ray Data pipeline (a
local Ray's start and a pipeline's set-up cost seconds, more than reading the rows).

:func:`reads_inline`: the footers say the dataset holds at most :data:`INLINE_ROWS` rows — the
bound :mod:`pipelines.data.validation` already checks such files here by. :func:`raw_tables`: a
split's files one after the other, only ``columns``, as pyarrow tables (what Ray Data's read
tasks hand ``map_batches``); a file that cannot be read is one line naming it.
"""

from __future__ import annotations

from typing import Iterator

import pyarrow as pa

from pipelines.data.sources import DataError, DataSource

INLINE_ROWS = 1_000_000  # up to this many rows (known from footers), read in this process


def reads_inline(source: DataSource, limit: int | None = None) -> bool:
    """Whether every file's rows are known (Parquet footers) and sum to at most ``limit``
    (default :data:`INLINE_ROWS`, read when called)."""
    return all(n >= 0 for n in source.rows) and sum(source.rows) <= (INLINE_ROWS if limit is None else limit)


def raw_tables(source: DataSource, columns: list[str], split: str = "all") -> Iterator[pa.Table]:
    """The non-empty files of ``split``, each as one table of ``columns``, in the spec's order."""
    files, rows = source.files_for(split)
    files = [f for f, n in zip(files, rows) if n != 0]
    if not files:
        raise DataError(f"{source.spec.location}: every file is empty")
    for path in files:
        try:
            table = _read(source, path, columns)
        except (pa.ArrowException, OSError, ValueError) as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise DataError(f"{path}: unreadable: {first}") from None
        yield table


def _read(source: DataSource, path: str, columns: list[str]) -> pa.Table:
    if source.spec.format == "parquet":
        import pyarrow.parquet as pq

        with source.fs.open(path, "rb") as fh:
            return pq.read_table(fh, columns=columns)
    import pyarrow.csv as pacsv

    with source.fs.open(path, "rb") as fh:
        return pacsv.read_csv(fh, convert_options=pacsv.ConvertOptions(include_columns=columns))


__all__ = ["INLINE_ROWS", "raw_tables", "reads_inline"]
