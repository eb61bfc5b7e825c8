"""Fixtures of the Ray side's tests: one private local Ray for the whole session, a small
generated dataset shared by the tests that stream it, and moto's S3 server on loopback."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_local():
    """One private local Ray for the whole test session (2 CPUs; dashboard on for the State API)."""
    import os

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    from pipelines.runtime.ray_env import init_ray

    init_ray("local", num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def generated(ray_local, tmp_path_factory):
    """A small generated dataset (4 shards) shared by the pipeline tests."""
    from pipelines.data.generate import generate

    out = tmp_path_factory.mktemp("gen")
    generate(str(out), rows=12_000, domains=60, seed=7, chunk_rows=3_000)
    return out


@pytest.fixture(scope="module")
def s3_endpoint():
    """moto's S3 server on a free loopback port (a real HTTP endpoint), per test module."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_env(monkeypatch):
    """Credentials moto accepts, for one test."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
