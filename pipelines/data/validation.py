"""The dataset checked before training: every file read once, in parallel Ray tasks, so that
bad rows are found in seconds, not an epoch into a run (``adasparse validate`` runs it alone).

Each task reads one file with pyarrow, batch by batch, and counts per column:

* ``label``: null, or not 0 or 1;
* ``time``: null;
* each numeric column: ±inf (null and NaN are missing values and become 0, docs/data.md);
* the file itself: a page or block that cannot be read or decoded (a corrupt file among good
  ones), reported with the row the reading stopped at.

A problem is one line — file, column, what, the first offending row (0-based, within the file),
the first bad value and how many rows — the rules of :mod:`adasparse.portable.rules`, which the
encoder (:func:`pipelines.data.encoding.encode_table`) and the exported runtime apply, found up front. ``columns="all"`` also
decodes every categorical column (what ``adasparse validate`` does: it finds corrupt pages
anywhere); the training job reads only the label, time and numeric columns (a fraction of the
bytes; a corrupt page elsewhere still fails the read task, naming the file).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from adasparse.portable import rules
from pipelines.data.inline_read import reads_inline
from pipelines.data.sources import DataError, DataSource
from pipelines.data.spec import DatasetSpec

BATCH_ROWS = 1 << 16


@dataclass
class Problem:
    file: str
    column: str | None  # None: the file itself
    what: str
    first_row: int
    count: int
    value: str = ""

    def line(self) -> str:
        if self.column is None:  # the file itself: where its reading stopped
            return f"{self.file}: {self.what} (reading stopped at row {self.first_row:,})"
        where = f"column {self.column!r}: "
        value = f" ({self.value})" if self.value else ""
        rows = "1 row" if self.count == 1 else f"{self.count:,} rows"
        return f"{self.file}: {where}{self.what}{value}, first at row {self.first_row:,}, {rows}"


@dataclass
class FileReport:
    file: str
    rows: int = 0
    problems: list[Problem] = field(default_factory=list)

    def add(self, column: str | None, what: str, mask: np.ndarray, offset: int, value: str = "") -> None:
        n = int(mask.sum())
        if not n:
            return
        for p in self.problems:
            if p.column == column and p.what == what:
                p.count += n
                return
        self.problems.append(Problem(self.file, column, what, offset + int(np.argmax(mask)), n, value))


@dataclass
class ValidationReport:
    files: list[FileReport]

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def problems(self) -> list[Problem]:
        return [p for f in self.files for p in f.problems]

    def raise_if_bad(self, spec_name: str = "") -> None:
        """A :class:`DataError` with the first problem's line (and how many more there are)."""
        problems = self.problems
        if problems:
            more = len(problems) - 1
            tail = f" (and {more} more problem{'s' if more > 1 else ''}: adasparse validate --data {spec_name or 'SPEC'} lists them)"
            raise DataError(problems[0].line() + (tail if more else ""))


def check_table(table: pa.Table, spec: DatasetSpec, report: FileReport, offset: int) -> None:
    """Count one batch's rows that break the data rules (:mod:`adasparse.portable.rules`, the
    rules the encoder and the exported runtime apply) into ``report`` (rows ``offset``.. of its file)."""
    names = set(table.column_names)
    found = []
    if spec.label in names:
        found += rules.label_violations(table[spec.label], spec.label)
    if spec.time is not None and spec.time in names:
        nulls = rules.time_violations(table[spec.time], spec.time)
        found += nulls
        if not nulls:
            rules.time_values(table[spec.time])  # the conversion the split uses: a type it cannot read fails here
    for name in spec.numeric_fields:
        if name in names and table.num_rows:
            found += rules.numeric_violations(table[name], name)
    for v in found:
        report.add(v.column, v.what, v.mask, offset, v.value)


def _batches(source: DataSource, path: str, columns: list[str]):
    if source.spec.format == "parquet":
        import pyarrow.parquet as pq

        with source.fs.open(path, "rb") as fh:
            for batch in pq.ParquetFile(fh).iter_batches(batch_size=BATCH_ROWS, columns=columns):
                yield pa.Table.from_batches([batch])
    else:
        import pyarrow.csv as pacsv

        with source.fs.open(path, "rb") as fh:
            reader = pacsv.open_csv(fh, convert_options=pacsv.ConvertOptions(include_columns=columns))
            for batch in reader:
                yield pa.Table.from_batches([batch])


def validate_file(source: DataSource, path: str, columns: list[str]) -> FileReport:
    """One file's report; a read or decode error ends its reading as a problem of the file."""
    report = FileReport(path)
    try:
        for table in _batches(source, path, columns):
            check_table(table, source.spec, report, report.rows)
            report.rows += table.num_rows
    except (pa.ArrowException, OSError, ValueError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        report.problems.append(Problem(path, None, f"unreadable: {first}", report.rows, 1))
    return report


def columns_to_check(spec: DatasetSpec, columns: str = "cheap") -> list[str]:
    """``cheap``: label, time and numeric columns; ``all``: every column the spec uses."""
    if columns == "all":
        return list(spec.columns)
    return [spec.label] + ([spec.time] if spec.time else []) + list(spec.numeric_fields)



def validate_source(source: DataSource, columns: str = "cheap", inline_rows: int | None = None) -> ValidationReport:
    """Every non-empty file of ``source`` checked in a Ray task of its own (a local Ray, or the
    cluster the process is connected to) — or here, file after file, when the footers say the
    dataset holds at most ``inline_rows`` rows (default :data:`pipelines.data.inline_read.INLINE_ROWS`) (a task's start costs more than reading them);
    the report lists the files in the spec's order."""
    cols = columns_to_check(source.spec, columns)
    files = [f for f, n in zip(source.files, source.rows) if n != 0]
    if reads_inline(source, inline_rows):
        return ValidationReport([validate_file(source, f, cols) for f in files])
    import ray

    # DEFAULT: outside any placement group the caller runs in (a Tune trial reserves only what
    # its own process needs), like Ray Data's read tasks
    task = ray.remote(validate_file).options(num_cpus=0.5, max_retries=0, scheduling_strategy="DEFAULT")
    return ValidationReport(ray.get([task.remote(source, f, cols) for f in files]))


def locate_read_error(source: DataSource, err: BaseException) -> DataError | None:
    """When ``err`` (or what it wraps) is a failure to read or decode data — pyarrow's errors
    rarely name the file — check every column of every file and return the first problem as a
    :class:`DataError` (file, column, row); None when ``err`` is no such failure or the check
    finds nothing."""
    from adasparse.errors import wrapped_errors

    if not any(isinstance(e, (pa.ArrowException, OSError)) for e in wrapped_errors(err)):
        return None
    problems = validate_source(source, columns="all").problems
    return DataError(problems[0].line()) if problems else None


__all__ = ["FileReport", "Problem", "ValidationReport", "check_table", "columns_to_check", "validate_file",
           "validate_source", "locate_read_error"]
