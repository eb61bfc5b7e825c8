"""The training job under ``ray job submit`` against a running ``ray start --head`` cluster,
with Ray's token authentication on; the cluster is stopped afterwards (only the processes this
test started, by PID)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from ray._common.utils import get_ray_address_file

from ray_head import head_node, ray_cli, submit

ROOT = Path(__file__).resolve().parents[2]


def _state_api_lookup_from_the_session_cluster(ray_local) -> str | None:
    """What a process of the session's local Ray learns about one of its own actors from the
    State API when it asks without an address, as Ray Train's placement-group cleaner does."""

    @ray_local.remote
    class Probe:
        def ping(self):
            return 1

    @ray_local.remote
    def lookup(actor_id: str):
        from ray.util.state import get_actor

        try:
            state = get_actor(actor_id, timeout=20)
        except Exception as err:  # noqa: BLE001 - the message is the finding
            return f"{type(err).__name__}: {err}"
        return None if state is None else state.state

    probe = Probe.remote()
    ray_local.get(probe.ping.remote())
    try:
        return ray_local.get(lookup.remote(probe._actor_id.hex()))
    finally:
        ray_local.kill(probe)


@pytest.mark.slow
def test_ray_job_submit_runs_the_training_job(generated, ray_local, tmp_path):
    cluster_file = Path(get_ray_address_file(None))
    before = cluster_file.read_text() if cluster_file.exists() else None
    with head_node(tmp_path) as (url, env, _):
        # two clusters on this machine now: the session's local Ray must still find its own
        # State API (without pipelines.runtime.ray_env's fix: "Found multiple active Ray instances",
        # or the other cluster, which `ray start` recorded as the latest, answers None)
        assert _state_api_lookup_from_the_session_cluster(ray_local) == "ALIVE"
        # without the token the cluster refuses the client
        anon = {k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN"} | {"RAY_AUTH_MODE": "disabled"}
        assert ray_cli("job", "list", "--address", url, env=anon).returncode != 0
        out = tmp_path / "runs"
        r = submit(url, env, [sys.executable, "-m", "pipelines.train", "--data", str(generated / "spec.yaml"),
                              "--model", "adasparse", "--workers", "2", "--epochs", "1", "--batch-size", "512",
                              "--out", str(out), "--name", "submitted"], cwd=tmp_path, working_dir=ROOT)
        assert cluster_file.exists() and cluster_file.read_text() != before  # ray start recorded itself
    # the head is gone and Ray's cluster file no longer names it
    assert (cluster_file.read_text() if cluster_file.exists() else None) == before
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "succeeded" in (r.stdout + r.stderr)
    metrics = json.loads((out / "submitted" / "metrics.json").read_text())
    assert set(metrics["test"]) >= {"logloss", "auc", "gauc"}
    assert 0.5 < metrics["test"]["auc"] < 1.0
