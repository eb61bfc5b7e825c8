"""Connecting to Ray: a running cluster when one is named, else a local one (the embedded default)."""

from __future__ import annotations

import contextlib
import logging
import os
import socket

import ray

from adasparse.host import usable_cores

# Where a process of this local cluster finds the State API (Ray reads it before RAY_ADDRESS)
API_SERVER_ENV = "RAY_API_SERVER_ADDRESS"


def init_ray(address: str | None = None, num_cpus: int | None = None, object_store_memory: int | None = None) -> None:
    """``address`` (or ``RAY_ADDRESS``, as ``ray job submit`` sets it) joins a cluster; without
    one, a private local Ray starts (``address="local"`` ignores stale cluster files)."""
    if ray.is_initialized():
        # e.g. inside a Tune trial: Ray is up, but this process's Ray Data context is the default
        # (V1 reader, block size and in-flight budget are per process)
        configure_ray_data()
        return
    addr = address or os.environ.get("RAY_ADDRESS") or "local"
    kw: dict = {"address": addr, "logging_level": logging.WARNING}
    if addr == "local":
        # the dashboard stays on: Ray's State API lives there, and Ray Train's placement-group
        # cleaner needs it to free the CPUs of a run whose controller died (a trial stopped by
        # ASHA); without it later trials wait for those CPUs forever
        kw.update(num_cpus=num_cpus, object_store_memory=object_store_memory or local_object_store_bytes(num_cpus))
        _init_local(kw)
    else:
        ray.init(**kw)
    configure_ray_data()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def environ(name: str, value: str):
    """``os.environ[name] = value`` while the block runs, then as it was."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _init_local(kw: dict) -> None:
    """Start a private local Ray whose processes find its own State API, not another cluster's.

    A process that asks the State API without an address (Ray Train's placement-group cleaner,
    inside the Train controller's actor) looks for running clusters on the machine and, with two
    local ones (two jobs started at once), fails with "Found multiple active Ray instances" or
    asks the other one. The dashboard (the State API's server) gets a port chosen here, and the
    cluster's processes inherit ``RAY_API_SERVER_ADDRESS`` naming it, which Ray reads first. The
    driver's own environment is left as it was, so processes it starts later are not misled."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with environ(API_SERVER_ENV, url):
        ctx = ray.init(dashboard_host="127.0.0.1", dashboard_port=port, **kw)
    got = getattr(ctx, "dashboard_url", "") or ""
    if got and not got.endswith(f":{port}"):  # the port was taken between choosing and binding it
        logging.getLogger(__name__).warning("local Ray's dashboard is at %s, not %s: its State API lookups may reach "
                                            "another cluster on this machine", got, url)


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
    resident in shared memory, so the resident store grew with the length of a stream up to the
    store's size; a store sized to the budget keeps a stream's memory flat (docs/data.md,
    "Memory"). Beyond the store, Ray spills to disk.
    Streams at once stay below CPUs / 2 (a training run's stream needs its workers plus a CPU for
    ingest; ``pipelines.sweep.tune.concurrency`` runs at most CPUs / (workers + 1) trials), so their
    budgets fit with room to spare.
    """
    env = os.environ.get("ADASPARSE_LOCAL_OBJECT_STORE_BYTES")
    if env:
        return int(env)
    cpus = num_cpus or usable_cores()
    return max(2, cpus) * INGEST_OBJECT_STORE_BUDGET


# Half Ray Data's 128 MiB default: a CTR row is ~150 bytes encoded, so 64 MiB is ~400k rows.
# Smaller blocks made the reader split each shard's output, which kept read and encode apart as
# two operators with a trip through the object store between them; at 64 MiB they fuse into one
# task per shard while a task's working set stays bounded (docs/data.md has the figures).
INGEST_BLOCK_BYTES = 64 << 20


def configure_ray_data(object_store_budget: int | None = None) -> None:
    """Quiet logs and a bounded in-flight budget for this driver's datasets."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    limits = ctx.execution_options.resource_limits
    ctx.execution_options.resource_limits = limits.copy(object_store_memory=object_store_budget or INGEST_OBJECT_STORE_BUDGET)
    ctx.target_max_block_size = INGEST_BLOCK_BYTES
    ctx.enable_progress_bars = False
    # the V1 file reader: V2 (Ray Data's default) lists the files in a task of its own before
    # any read starts, which delays every stream's first batch; V1 reads the same files with the
    # same options (docs/data.md, "Ray Data's V1 Parquet reader")
    ctx.use_datasource_v2 = False
    # no extra splitting of read blocks to reach Ray's default of 200 blocks per read: the
    # split would stop the encoder from fusing with the read, and a shard is already one
    # task's worth of work
    ctx.read_op_min_num_blocks = 1
    ctx.print_on_execution_start = False
    # a bad row found while encoding raises pipelines.data.sources.DataError in the read task: let it
    # travel as itself (inside Ray's task error) rather than wrapped in a UserCodeException
    # whose pickled form loses its cause, so commands recognise it by type (adasparse.errors)
    ctx.raise_original_map_exception = True
    logging.getLogger("ray.data").setLevel(logging.WARNING)
