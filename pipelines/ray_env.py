"""Connecting to Ray: a running cluster when one is named, else a local one (the embedded default)."""

from __future__ import annotations

import logging
import os

import ray


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """``address`` (or ``RAY_ADDRESS``, as ``ray job submit`` sets it) joins a cluster; without
    one, a private local Ray starts (``address="local"`` ignores stale cluster files)."""
    if ray.is_initialized():
        return
    addr = address or os.environ.get("RAY_ADDRESS") or "local"
    kw: dict = {"address": addr, "logging_level": logging.WARNING}
    if addr == "local":
        kw.update(num_cpus=num_cpus, include_dashboard=False)
    ray.init(**kw)
    quiet_ray_data()


def quiet_ray_data() -> None:
    """Progress bars and per-dataset INFO logs would drown the job's own output."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
