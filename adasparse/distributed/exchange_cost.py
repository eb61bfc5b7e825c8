"""The bytes one worker sends per step in :class:`GradientAverager`'s exchange, as a formula,
and the distinct embedding rows a batch touches (which the sparse part of that volume follows).

Notation: W workers, a table t of width d_t whose rows a worker's batch touches u_{t,r} distinct
times (u_t = max over workers: the all-gather pads every worker's block to it), n dense gradient
values, T sparse tables, 4-byte floats. With ring collectives (gloo's on CPU, NCCL's rings on
GPU) a worker sends

* the all-reduce of the dense gradients, the tables' row counts and two scalars
  (A = n + T·W + 2 values): 2·(W−1)/W · 4·A bytes — flat in W;
* each table's all-gather of its rows, ids riding as two float32 columns beside the d_t values:
  (W−1) · 4·u_t·(d_t + 2) bytes — linear in W: every worker's touched rows go to every worker;

or, on the fused path (small exchanges: one all-gather of the whole payload padded to the
per-table bounds b_t), (W−1) · 4·(n + 2 + T + Σ_t b_t·(d_t + 2)) bytes.

The sparse term is why a replicated table stops scaling: per worker it grows with W at a fixed
per-worker batch, while the step's compute does not. ``expected_distinct`` gives u for a field
whose ids follow a Zipf law, so the volume can be projected to batches and worker counts not
measured (docs/scale.md)."""

from __future__ import annotations

import numpy as np

FLOAT = 4  # bytes per exchanged value (float32)


def allreduce_bytes(world: int, values: int) -> float:
    """Bytes one worker sends in a ring all-reduce of ``values`` floats (reduce-scatter, then
    all-gather: each passes (W−1)/W of the buffer)."""
    return 2.0 * (world - 1) / world * FLOAT * values if world > 1 else 0.0


def allgather_bytes(world: int, values: int) -> float:
    """Bytes one worker sends in a ring all-gather of ``values`` floats per worker: its own block
    and W−2 others pass through it, (W−1) blocks in all."""
    return float((world - 1) * FLOAT * values)


def step_bytes(world: int, dense: int, tables: list[tuple[int, int]]) -> dict[str, float]:
    """Bytes one worker sends per step on the two-collective path: ``dense`` gradient values and,
    per sparse table, (u_t: the most distinct rows any worker touched this step, d_t: width).
    Returns the all-reduce's part, the all-gathers' part and their sum."""
    reduce = allreduce_bytes(world, dense + len(tables) * world + 2)
    gather = sum(allgather_bytes(world, u * (d + 2)) for u, d in tables)
    return {"allreduce": reduce, "allgather": gather, "total": reduce + gather}


def fused_step_bytes(world: int, dense: int, bounds: list[tuple[int, int]]) -> float:
    """Bytes one worker sends per step on the fused path: one all-gather of the whole payload,
    every table padded to its bound b_t (``bounds``: (b_t, d_t))."""
    return allgather_bytes(world, dense + 2 + len(bounds) + sum(b * (d + 2) for b, d in bounds))


def sharded_step_bytes(world: int, dense: int, batch: int, lookups: int, dim: int) -> float:
    """For comparison, bytes one worker sends per step when the tables are sharded across the
    workers instead of replicated (model-parallel, as TorchRec does): the dense all-reduce, and
    an all-to-all of the looked-up embeddings forward and of their gradients backward —
    2·(W−1)/W·4·batch·lookups·dim, flat in W (each worker keeps 1/W of its batch's lookups)."""
    return allreduce_bytes(world, dense) + 2.0 * (world - 1) / world * FLOAT * batch * lookups * dim


def table_wise_step_bytes(world: int, batch: int, fields: int, owned: int, dim: int) -> float:
    """Bytes one worker sends per step for ``fields`` one-id-per-row tables sharded table-wise
    (:mod:`adasparse.distributed.sharded_tables`), of which it holds ``owned``: its batch's ids
    of the others' tables (int64 id and int32 length each), the rows of its own tables for the
    other W−1 workers' batches, and, backward, the gradients of the others' tables' rows; plus
    the one-value all-reduce of the step's rows. Flat in W for an even spread of tables
    (owned ≈ fields/W): (W−1)/W·fields·batch·(12 + 8·dim)."""
    if world == 1:
        return 0.0
    ids = (fields - owned) * batch * (8 + 4)
    rows = owned * (world - 1) * batch * dim * FLOAT
    grads = (fields - owned) * batch * dim * FLOAT
    return ids + rows + grads + allreduce_bytes(world, 1)


def exchange_seconds(world: int, dense: int, tables: list[tuple[int, int]], bandwidth: float,
                     latency: float = 0.0) -> float:
    """A step's exchange time on links of ``bandwidth`` bytes/s per worker with ``latency``
    seconds per ring hop (the all-reduce makes 2·(W−1) hops, each all-gather W−1), not overlapped
    with compute."""
    hops = 2 * (world - 1) + (world - 1) * len(tables)
    return step_bytes(world, dense, tables)["total"] / bandwidth + hops * latency


def scaling_efficiency(world: int, dense: int, tables: list[tuple[int, int]], compute: float, bandwidth: float,
                       latency: float = 0.0) -> float:
    """Throughput of ``world`` workers ÷ ``world`` × one worker's, for ``compute`` seconds of
    forward and backward per step at a fixed per-worker batch (u_t stays what one worker's batch
    touches)."""
    return compute / (compute + exchange_seconds(world, dense, tables, bandwidth, latency))


def scaling_limit(dense: int, tables: list[tuple[int, int]], compute: float, bandwidth: float,
                  latency: float = 0.0, efficiency: float = 0.5, most: int = 1 << 16) -> int:
    """The fewest workers at which the replicated-table exchange holds scaling efficiency below
    ``efficiency`` (at 0.5: the exchange takes as long as the compute; each worker added beyond
    it adds less than half a worker's throughput), ``most`` if none up to it."""
    for world in range(2, most + 1):
        if scaling_efficiency(world, dense, tables, compute, bandwidth, latency) < efficiency:
            return world
    return most


def zipf_probabilities(values: int, exponent: float) -> np.ndarray:
    """P(rank k) ∝ k^−s for k = 1..values: the id distribution of one field."""
    p = np.arange(1, values + 1, dtype=np.float64) ** -float(exponent)
    return p / p.sum()


def expected_distinct(probabilities: np.ndarray, draws: int) -> float:
    """Expected distinct ids among ``draws`` independent draws: Σ_v 1 − (1 − p_v)^draws."""
    return float(np.sum(-np.expm1(draws * np.log1p(-probabilities))))


__all__ = ["allgather_bytes", "allreduce_bytes", "exchange_seconds", "expected_distinct", "fused_step_bytes",
           "scaling_efficiency", "scaling_limit", "sharded_step_bytes", "step_bytes", "table_wise_step_bytes",
           "zipf_probabilities"]
