"""A ``ray start --head --block`` cluster for tests: free ports, token auth, and a teardown
that ends only the processes it started (by PID, the whole process tree)."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
from ray._common.utils import get_ray_address_file

BIN = Path(sys.executable).parent
# every fixed default port moves to a free one: the test session's own local Ray holds the defaults
PORT_FLAGS = ("ray-client-server-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
              "metrics-export-port", "runtime-env-agent-port", "node-manager-port", "object-manager-port")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_cli(*args: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ray"), *args], env=env, capture_output=True, text=True, timeout=timeout)


class _Tree:
    """Remembers every descendant ever seen, so that processes started late are ended too."""

    def __init__(self, proc: subprocess.Popen):
        self.root, self.seen = proc, {}

    def scan(self) -> None:
        try:
            for p in [psutil.Process(self.root.pid)] + psutil.Process(self.root.pid).children(recursive=True):
                self.seen.setdefault(p.pid, p)
        except psutil.NoSuchProcess:
            pass

    def end(self) -> None:
        self.scan()
        alive = [p for p in self.seen.values() if p.is_running()]
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.terminate()
        _, still = psutil.wait_procs(alive, timeout=20)
        for p in still:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()


@contextlib.contextmanager
def _restores_cluster_file(port: int):
    """``ray start`` records its address in Ray's cluster file (``ray_current_cluster``), which
    only ``ray stop`` removes; a head ended by PID would leave it pointing at a dead cluster, and
    Ray's address auto-detection (``address="auto"``, the State API inside later local clusters,
    e.g. Ray Train's placement-group cleaner) would then wait for that GCS. Put the file back as
    it was, if it still names this head."""
    path = Path(get_ray_address_file(None))
    before = path.read_text() if path.exists() else None
    try:
        yield
    finally:
        if path.exists() and path.read_text().strip().endswith(f":{port}"):
            if before is None:
                path.unlink()
            else:
                path.write_text(before)


@contextlib.contextmanager
def head_node(log_dir: Path, *extra: str, num_cpus: int = 2, env_extra: dict | None = None, gcs_port: int | None = None):
    """Yields (dashboard URL, env with the token, process tree) once the job API answers."""
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), **(env_extra or {})}
    env.pop("RAY_ADDRESS", None)
    dash, port = free_port(), gcs_port or free_port()
    cmd = [str(BIN / "ray"), "start", "--head", "--block", f"--num-cpus={num_cpus}", f"--port={port}",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--include-dashboard=true", "--disable-usage-stats",
           *[f"--{flag}={free_port()}" for flag in PORT_FLAGS], *extra]
    log = open(log_dir / "ray_start.log", "w")
    with _restores_cluster_file(port):
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=log_dir)
        tree = _Tree(proc)
        url = f"http://127.0.0.1:{dash}"
        try:
            deadline = time.time() + 90
            while ray_cli("job", "list", "--address", url, env=env).returncode != 0:
                tree.scan()
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("ray start --head did not come up:\n" + (log_dir / "ray_start.log").read_text()[-3000:])
                time.sleep(2)
            yield url, env, tree
        finally:
            tree.end()
        log.close()


def submit(url: str, env: dict, entrypoint: list[str], cwd: Path, working_dir: Path, timeout: float = 600):
    """``ray job submit`` (blocking), retried while the job agent is still starting."""
    cmd = [str(BIN / "ray"), "job", "submit", "--address", url, "--working-dir", str(working_dir), "--", *entrypoint]
    deadline = time.time() + 120
    while True:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)
        if "No available agent" not in r.stderr + r.stdout or time.time() > deadline:
            return r
        time.sleep(3)
