"""Connecting to Ray: a running cluster when one is named, else a local one (the embedded default)."""

from __future__ import annotations

import logging
import os

import ray


def init_ray(address: str | None = None, num_cpus: int | None = None, object_store_memory: int | None = None) -> None:
    """``address`` (or ``RAY_ADDRESS``, as ``ray job submit`` sets it) joins a cluster; without
    one, a private local Ray starts (``address="local"`` ignores stale cluster files)."""
    if ray.is_initialized():
        return
    addr = address or os.environ.get("RAY_ADDRESS") or "local"
    kw: dict = {"address": addr, "logging_level": logging.WARNING}
    if addr == "local":
        # the dashboard stays on: Ray's State API lives there, and Ray Train's placement-group
        # cleaner needs it to free the CPUs of a run whose controller died (a trial stopped by
        # ASHA); without it later trials wait for those CPUs forever
        kw.update(num_cpus=num_cpus, object_store_memory=object_store_memory)
    ray.init(**kw)
    configure_ray_data()


# Blocks in flight between the reading/encoding tasks and the consumers. Ray Data's default
# lets a stream fill a large share of the object store (30 % of RAM) before backpressure, so
# peak memory grew with the dataset; a fixed budget keeps a stream's footprint flat whatever
# its length (benchmarks/ingest.py measures 1M vs 10M rows).
INGEST_OBJECT_STORE_BUDGET = int(os.environ.get("ADASPARSE_INGEST_BUDGET_BYTES", 512 << 20))


# Smaller blocks than Ray Data's 128 MiB default: a CTR row is ~150 bytes encoded, so 16 MiB is
# ~100k rows, plenty to amortise per-block costs while keeping each task's working set small.
INGEST_BLOCK_BYTES = 16 << 20


def configure_ray_data(object_store_budget: int | None = None) -> None:
    """Quiet logs and a bounded in-flight budget for this driver's datasets."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    limits = ctx.execution_options.resource_limits
    ctx.execution_options.resource_limits = limits.copy(object_store_memory=object_store_budget or INGEST_OBJECT_STORE_BUDGET)
    ctx.target_max_block_size = INGEST_BLOCK_BYTES
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
