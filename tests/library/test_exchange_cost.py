"""The exchange's cost model (adasparse.distributed.exchange_cost) against the bytes gloo's
processes really send (benchmarks/exchange.py's measurement), and its formulas by hand."""

from __future__ import annotations

import importlib
import math
import os
from pathlib import Path

import numpy as np
import pytest

from adasparse.distributed.exchange_cost import (allgather_bytes, allreduce_bytes, exchange_seconds,
                                                 expected_distinct, fused_step_bytes, scaling_efficiency,
                                                 scaling_limit, sharded_step_bytes, step_bytes,
                                                 zipf_probabilities)

ROOT = Path(__file__).resolve().parents[2]


def _benchmark(monkeypatch):
    # by name from benchmarks/: the spawned workers unpickle its functions from there
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    return importlib.import_module("exchange")


def test_ring_formulas_by_hand():
    assert allreduce_bytes(1, 100) == 0 and allgather_bytes(1, 100) == 0
    assert allreduce_bytes(4, 100) == 2 * 3 / 4 * 400  # reduce-scatter + all-gather, 3/4 of the buffer each
    assert allgather_bytes(4, 100) == 3 * 400
    got = step_bytes(4, dense=1000, tables=[(50, 16), (7, 8)])
    assert got["allreduce"] == allreduce_bytes(4, 1000 + 2 * 4 + 2)  # dense, a count per table and worker, 2 scalars
    assert got["allgather"] == 3 * 4 * (50 * 18 + 7 * 10)  # ids ride as two float32 columns
    assert got["total"] == got["allreduce"] + got["allgather"]
    assert fused_step_bytes(3, 1000, [(64, 16)]) == 2 * 4 * (1000 + 2 + 1 + 64 * 18)
    # sharded tables: 3/4 of the batch's 10 × 16-wide lookups leave forward, their gradients come back
    assert sharded_step_bytes(4, 1000, 256, 10, 16) == allreduce_bytes(4, 1000) + 2 * 3 / 4 * 4 * 256 * 10 * 16


def test_the_scaling_limit_is_where_the_exchange_takes_as_long_as_the_compute():
    tables = [(1000, 14)]  # 1000 rows × 16 floats × 4 B = 64 kB per worker and step
    assert exchange_seconds(2, 0, tables, 64_000) == pytest.approx((2 * 1 / 2 * 4 * 4 + 64_000) / 64_000)
    assert exchange_seconds(3, 0, tables, 1e18, latency=1e-6) == pytest.approx(2 * 2e-6 + 2e-6)
    # no dense part: W−1 blocks of 64 kB at 64 kB/s (plus the counts' few bytes) against 10 s
    # of compute: at W = 11 the exchange just passes the compute
    eff = [scaling_efficiency(w, 0, tables, 10.0, 64_000) for w in (2, 10, 11)]
    assert eff[0] > eff[1] > 0.5 > eff[2] > 0.49
    assert scaling_limit(0, tables, 10.0, 64_000) == 11
    assert scaling_limit(0, tables, 10.0, 1e18, most=50) == 50  # never within the bound


def test_expected_distinct_is_exact_on_small_laws():
    assert expected_distinct(np.array([0.5, 0.5]), 2) == pytest.approx(1.5)  # both ids, or one twice
    p = zipf_probabilities(5, 1.0)
    assert p.sum() == pytest.approx(1.0) and p[0] / p[1] == pytest.approx(2.0)
    draws = 3  # every sequence of 3 draws from 5 ids, weighted by its probability
    exact = sum(p[a] * p[b] * p[c] * len({a, b, c}) for a in range(5) for b in range(5) for c in range(5))
    assert expected_distinct(p, draws) == pytest.approx(exact, rel=1e-12)
    assert math.isclose(expected_distinct(zipf_probabilities(10, 0.0), 10_000), 10, rel_tol=1e-9)


@pytest.mark.processes
@pytest.mark.parametrize("batch", [2048, 32])  # 2048: all-reduce + all-gather; 32: the fused all-gather
def test_the_model_is_the_bytes_gloo_sends(batch, monkeypatch):
    bench = _benchmark(monkeypatch)
    opts = {"batch": batch, "ids": 20_000, "zipf": 1.1, "steps": 3, "warmup": 1}
    monkeypatch.delenv("GLOO_SOCKET_IFNAME", raising=False)
    recs = bench.measure(3, opts)  # 3 workers: a ring where (W−1)/W matters
    assert "GLOO_SOCKET_IFNAME" not in os.environ  # what the workers needed, not left to later tests
    row = bench.summarize(3, recs)
    assert row["transport"] == ("all_gather" if batch == 32 else "all_reduce+all_gather")
    assert 1.0 <= row["sent"] / row["model"] < 1.01, row  # gloo's message headers: well under 1 %
