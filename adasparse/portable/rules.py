"""The data rules: which raw values a row may hold and what each becomes — written once.

Part of :mod:`adasparse.portable` (numpy and pyarrow only), so the same code decides for the
check of every file before training (``pipelines/data/validation.py``), the training job's
encoder (``pipelines/data/encoding.py``) and an exported model's runtime (:mod:`.runtime`):
a value is accepted or refused the same way everywhere (``tests/library/test_data_rules.py``).

| column      | accepted                                          | becomes                     | refused          |
| ----------- | ------------------------------------------------- | --------------------------- | ---------------- |
| label       | exactly 0 or 1 (compared as float64)              | float32 0/1                 | null; any other  |
| time        | integers, floats (truncated), timestamps, dates   | int64 (timestamps: unit)    | null             |
| numeric     | numbers finite in float32; null and NaN (missing) | float32, missing as 0       | ±inf; |x| > 3.4e38 |
| categorical | anything; null, NaN, the spec's missing markers   | a 64-bit hash (:mod:`.columns`) | —            |

A check returns :class:`Violation` s — the rows that break a rule — so validation can count
them per file while the encoder and the runtime refuse the batch with the first one's line.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


class Violation(NamedTuple):
    """Rows of one column that break one rule: ``what`` names it (``"null label"``), ``mask``
    flags the rows, ``value`` is the first bad value as text ("" when it has none)."""

    column: str
    what: str
    mask: np.ndarray
    value: str = ""

    def line(self) -> str:
        """``column 'y': label not 0 or 1 (2)`` — the part of an error after the file."""
        return f"column {self.column!r}: {self.what}" + (f" ({self.value})" if self.value else "")


class RuleError(ValueError):
    """A batch that breaks a rule; ``violation`` holds the rows."""

    def __init__(self, violation: Violation):
        super().__init__(violation.line())
        self.violation = violation


def _flat(col):
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _nulls(col) -> np.ndarray:
    return col.is_null().to_numpy(zero_copy_only=False) if col.null_count else np.zeros(len(col), bool)


def _first(values: np.ndarray, mask: np.ndarray) -> str:
    return f"{values[mask][0]:g}" if mask.any() else ""


def _as_float64(col) -> np.ndarray:
    col = _flat(col)
    if not len(col):
        return np.zeros(0)
    return np.asarray(pc.fill_null(col, 0).to_numpy(zero_copy_only=False) if col.null_count else col.to_numpy(zero_copy_only=False),
                      dtype=np.float64)


def label_violations(col, name: str, y: np.ndarray | None = None) -> list[Violation]:
    """A null label; a label that is not exactly 0 or 1 in float64 (1.00000001 is refused).
    ``y``: the column as float64, when the caller has it."""
    null = _nulls(col)
    y = _as_float64(col) if y is None else y
    bad = ~null & (y != 0) & (y != 1)
    return [v for v in (Violation(name, "null label", null), Violation(name, "label not 0 or 1", bad, _first(y, bad)))
            if v.mask.any()]


def label_values(col, name: str) -> np.ndarray:
    """The label as float32 0/1; :class:`RuleError` on the first rule it breaks."""
    y = _as_float64(col)
    _refuse(label_violations(col, name, y))
    return y.astype(np.float32)


def time_violations(col, name: str) -> list[Violation]:
    """A null time (a type :func:`time_values` cannot read raises there, naming nothing: the
    callers add the column)."""
    null = _nulls(col)
    return [Violation(name, "null time", null)] if null.any() else []


def time_values(col) -> np.ndarray:
    """A time column as int64 (timestamps in their unit, dates in days, numbers truncated)."""
    col = _flat(col)
    if pa.types.is_timestamp(col.type) or pa.types.is_date(col.type):
        col = col.cast(pa.int64()) if pa.types.is_timestamp(col.type) else pc.cast(col.cast(pa.date32()), pa.int32())
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64).astype(np.int64)


def checked_time_values(col, name: str) -> np.ndarray:
    """:func:`time_values` of a column that must have no nulls (:class:`RuleError` otherwise)."""
    _refuse(time_violations(col, name))
    return time_values(col)


FLOAT32_MAX = float(np.finfo(np.float32).max)


def numeric_violations(col, name: str, vals: np.ndarray | None = None) -> list[Violation]:
    """An infinite value; a finite one that float32 cannot hold (it would train as ±inf). Null
    and NaN are missing values, read as 0. ``vals``: the column as float64, when the caller has it."""
    vals = _as_float64(col) if vals is None else vals
    inf = np.isinf(vals)
    big = ~inf & (np.abs(np.nan_to_num(vals)) > FLOAT32_MAX)
    found = [Violation(name, "infinite value", inf, _first(vals, inf)),
             Violation(name, "value beyond float32's range", big, _first(vals, big))]
    return [v for v in found if v.mask.any()]


def numeric_values(col, name: str) -> np.ndarray:
    """A numeric column as float32, null and NaN as 0; :class:`RuleError` on an infinite value."""
    vals = _as_float64(col)
    _refuse(numeric_violations(col, name, vals))
    return np.nan_to_num(vals, nan=0.0).astype(np.float32)


def _refuse(found: list[Violation]) -> None:
    if found:
        raise RuleError(found[0])


__all__ = ["FLOAT32_MAX", "RuleError", "Violation", "checked_time_values", "label_values", "label_violations", "numeric_values",
           "numeric_violations", "time_values", "time_violations"]
