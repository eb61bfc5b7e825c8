"""benchmarks/sharded_tables.py on tiny tables: both layouts run, and the cost model gives the bytes
each worker sends per step (measured by the process's own writes) within 1 %."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

pytestmark = pytest.mark.processes


def test_both_layouts_send_the_bytes_their_cost_model_says(capsys):
    import sharded_tables

    rows = sharded_tables.main(["--workers", "2", "--ids", "5000", "--batch", "256", "--steps", "2", "--warmup", "1"])
    assert [r["layout"] for r in rows] == ["replicated", "sharded"]
    for r in rows:
        assert r["model"] == pytest.approx(r["sent"], rel=0.01), r
    replicated, sharded = rows
    assert sharded["table_mb_max"] < replicated["table_mb_max"]  # a worker holds its tables only
    assert "| 2 | sharded |" in capsys.readouterr().out
