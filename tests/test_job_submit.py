"""The training job under ``ray job submit`` against a running ``ray start --head`` cluster,
with Ray's token authentication on; the cluster is stopped afterwards (only the processes this
test started, by PID)."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def head_node(tmp_path):
    """``ray start --head --block`` on free ports with a fresh token; yields (dashboard URL, env)."""
    token = secrets.token_hex(32)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    env.pop("RAY_ADDRESS", None)
    gcs, dash = _free_port(), _free_port()
    cmd = [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus=2", f"--port={gcs}",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--include-dashboard=true",
           "--disable-usage-stats"]
    # every fixed default port moved to a free one: the test session's own local Ray holds the defaults
    for flag in ("ray-client-server-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                 "metrics-export-port", "runtime-env-agent-port", "node-manager-port", "object-manager-port"):
        cmd.append(f"--{flag}={_free_port()}")
    log = open(tmp_path / "ray_start.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    url = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.time() + 90
        while True:
            r = subprocess.run([str(BIN / "ray"), "job", "list", "--address", url], env=env, capture_output=True, text=True)
            if r.returncode == 0:
                break
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("ray start --head did not come up:\n" + (tmp_path / "ray_start.log").read_text()[-3000:])
            time.sleep(2)
        yield url, env
    finally:
        started = [proc] + psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else [proc]
        for p in started:
            try:
                p.terminate()
            except (psutil.NoSuchProcess, ProcessLookupError):
                pass
        gone, alive = psutil.wait_procs([psutil.Process(p.pid) for p in started if psutil.pid_exists(p.pid)], timeout=20)
        for p in alive:
            p.kill()
        log.close()


@pytest.mark.slow
def test_ray_job_submit_runs_the_training_job(generated, tmp_path, head_node):
    url, env = head_node
    # without the token the cluster refuses the client
    anon = {**env, "RAY_AUTH_MODE": "disabled"}
    anon.pop("RAY_AUTH_TOKEN")
    refused = subprocess.run([str(BIN / "ray"), "job", "list", "--address", url], env=anon, capture_output=True, text=True)
    assert refused.returncode != 0

    out = tmp_path / "runs"
    cmd = [str(BIN / "ray"), "job", "submit", "--address", url, "--working-dir", str(ROOT), "--",
           sys.executable, "-m", "pipelines.train", "--data", str(generated / "spec.yaml"), "--model", "adasparse",
           "--workers", "2", "--epochs", "1", "--batch-size", "512", "--out", str(out), "--name", "submitted"]
    deadline = time.time() + 120
    while True:  # the job agent comes up a little after the dashboard answers
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
        if "No available agent" not in r.stderr + r.stdout or time.time() > deadline:
            break
        time.sleep(3)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "succeeded" in (r.stdout + r.stderr)
    metrics = json.loads((out / "submitted" / "metrics.json").read_text())
    assert set(metrics["test"]) >= {"logloss", "auc", "gauc"}
    assert 0.5 < metrics["test"]["auc"] < 1.0
