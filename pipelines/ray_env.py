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
        kw.update(num_cpus=num_cpus, object_store_memory=object_store_memory or local_object_store_bytes(num_cpus))
    ray.init(**kw)
    configure_ray_data()


# Blocks in flight between the reading/encoding tasks and the consumers. Ray Data's default
# lets a stream fill a large share of the object store (30 % of RAM) before backpressure, so
# peak memory grew with the dataset; a fixed budget keeps a stream's footprint flat whatever
# its length (benchmarks/ingest.py measures 1M vs 10M rows).
INGEST_OBJECT_STORE_BUDGET = int(os.environ.get("ADASPARSE_INGEST_BUDGET_BYTES", 128 << 20))


def local_object_store_bytes(num_cpus: int | None = None) -> int:
    """Object store of the embedded local cluster: one stream's in-flight budget per CPU, at
    least two (``ADASPARSE_LOCAL_OBJECT_STORE_BYTES`` overrides; a cluster's own YAML sets its nodes').

    Ray's default (30 % of RAM) is far more than streams bounded by
    :data:`INGEST_OBJECT_STORE_BUDGET` need, and the store keeps every page it has ever written
    resident in shared memory: its allocator spreads successive blocks over fresh pages, so the
    resident store grew with the length of a stream up to the store's size (benchmarks/ingest.py,
    2 cores: a read worker's shared pages 116 MiB after 1M rows, 438 MiB after 10M; with a
    256 MiB store 104–123 and 235 MiB, peak 10M vs 1M 1.05–1.13× instead of 1.23×, and the stream
    7–20 % faster for the page faults it no longer takes). Beyond the store, Ray spills to disk.
    Streams at once stay below CPUs / 2 (a training run's stream needs its workers plus a CPU for
    ingest; ``pipelines.tune.concurrency`` runs at most CPUs / (workers + 1) trials), so their
    budgets fit with room to spare.
    """
    env = os.environ.get("ADASPARSE_LOCAL_OBJECT_STORE_BYTES")
    if env:
        return int(env)
    cpus = num_cpus or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    return max(2, cpus) * INGEST_OBJECT_STORE_BUDGET


# Half Ray Data's 128 MiB default: a CTR row is ~150 bytes encoded, so 64 MiB is ~400k rows.
# Measured (benchmarks/ingest.py, 10M rows, 40 shards of 250k rows): at 16 or 32 MiB the
# reader splits each shard's output (SplitBlocks), which keeps read and encode apart as two
# operators with a trip through the object store between them (~1.2M rows/s); at 64 MiB they
# fuse into one task per shard (~1.6M rows/s) while a task's working set stays bounded.
INGEST_BLOCK_BYTES = 64 << 20


def configure_ray_data(object_store_budget: int | None = None) -> None:
    """Quiet logs and a bounded in-flight budget for this driver's datasets."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    limits = ctx.execution_options.resource_limits
    ctx.execution_options.resource_limits = limits.copy(object_store_memory=object_store_budget or INGEST_OBJECT_STORE_BUDGET)
    ctx.target_max_block_size = INGEST_BLOCK_BYTES
    ctx.enable_progress_bars = False
    # Ray Data's file-datasource V2 (its default) lists files in a task of its own before any
    # read starts: 5-6 s to the first batch of every stream here (every epoch of a training
    # run), against ~1 s for the V1 reader, whose read workers also peaked at a third of the
    # memory (benchmarks/ingest.py). Both read the same files with the same options.
    ctx.use_datasource_v2 = False
    # no extra splitting of read blocks to reach Ray's default of 200 blocks per read: the
    # split would stop the encoder from fusing with the read, and a shard is already one
    # task's worth of work (Ray Train's streaming split balances rows across workers anyway)
    ctx.read_op_min_num_blocks = 1
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
