"""Fixtures of the Ray side's tests: one private local Ray for the whole session, and a small
generated dataset shared by the tests that stream it."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_local():
    """One private local Ray for the whole test session (2 CPUs; dashboard on for the State API)."""
    import os

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    from pipelines.ray_env import init_ray

    init_ray("local", num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def generated(ray_local, tmp_path_factory):
    """A small generated dataset (4 shards) shared by the pipeline tests."""
    from pipelines.generate import generate

    out = tmp_path_factory.mktemp("gen")
    generate(str(out), rows=12_000, domains=60, seed=7, chunk_rows=3_000)
    return out
