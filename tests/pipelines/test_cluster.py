"""cluster/: every YAML validated (the launcher configs by Ray's own schema check, the KubeRay
manifests for the fields the operator needs), and the local autoscaling cluster shown working:
a job that needs more CPUs than the head has makes the autoscaler add nodes, the job
finishes, and the idle nodes are removed again."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ray_head import BIN, free_port, head_node, ray_cli

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"


def _load(name: str):
    return _load_all(name)[0]


def _load_all(name: str) -> list:
    return list(yaml.safe_load_all((CLUSTER / name).read_text()))


def _rsync_skips(patterns: list[str], path: str) -> bool:
    """Whether rsync --exclude PATTERN (each of ``patterns``) skips ``path`` or a folder above
    it: a pattern without a slash matches any component, ``**/x`` any component named x."""
    import fnmatch

    parts = path.split("/")
    for pat in patterns:
        name = pat.removeprefix("**/")
        if "/" in name:
            continue
        if any(fnmatch.fnmatch(part, name) for part in parts):
            return True
    return False


def test_aws_launcher_config_passes_rays_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = _load("aws.yaml")
    validate_config(prepare_config(copy.deepcopy(cfg)))  # raises on any schema error
    types = cfg["available_node_types"]
    assert types[cfg["head_node_type"]]["resources"] == {"CPU": 0}
    assert {"worker.gpu", "worker.cpu"} <= set(types) and all(types[t]["min_workers"] == 0 for t in ("worker.gpu", "worker.cpu"))
    assert types["worker.gpu"]["node_config"]["InstanceType"].startswith(("g", "p"))
    # only SSH is open to the outside; token auth on every node; S3 through the instance role
    perms = cfg["provider"]["security_group"]["IpPermissions"]
    assert [(p["FromPort"], p["ToPort"]) for p in perms] == [(22, 22)]
    starts = cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in c for c in starts if "ray start" in c)
    assert all("IamInstanceProfile" in t["node_config"] for t in types.values())
    text = (CLUSTER / "aws.yaml").read_text().lower()
    assert "aws_secret_access_key" not in text and "aws_access_key_id" not in text
    # SSH from a network the user names: no default open to the world
    cidrs = [r["CidrIp"] for p in perms for r in p["IpRanges"]]
    assert cidrs == ["SET-YOUR-NETWORK-CIDR"] and "0.0.0.0/0" not in text.split("never 0.0.0.0/0")[0]
    # the working directory goes to the nodes without environments, data, runs, history or secrets
    assert cfg["rsync_filter"] == [".gitignore"]
    skip = cfg["rsync_exclude"]
    for path in [".venv/bin/python", "runs/x/checkpoint/state.pt", "data/synth/part-000000.parquet", ".git/config",
                 "sweeps/a/tuner.pkl", "comparisons/table1/table.md", ".env", "keys/node.pem", ".aws/credentials",
                 "adasparse/__pycache__/model.cpython-311.pyc", "my_secret_token.txt"]:
        assert _rsync_skips(skip, path), path
    for path in ["adasparse/model.py", "pipelines/train/driver.py", "pyproject.toml", "constraints.txt", "cluster/aws.yaml",
                 "tune_spaces/defaults.yaml"]:
        assert not _rsync_skips(skip, path), path
    bad = copy.deepcopy(cfg)
    bad["available_node_types"]["worker.gpu"]["max_workrs"] = 3
    with pytest.raises(Exception, match="max_workrs"):
        validate_config(prepare_config(bad))


def test_local_fake_multinode_config_passes_rays_validation():
    from ray.autoscaler._private.util import validate_config

    cfg = _load("local-fake-multinode.yaml")
    validate_config(copy.deepcopy(cfg))  # the fake provider ships no defaults to merge (prepare_config)
    assert cfg["provider"]["type"] == "fake_multinode" and cfg["head_node_type"] == "ray.head.default"


def _check_pod_template(tpl: dict, where: str) -> None:
    containers = tpl["spec"]["containers"]
    assert containers, where
    for c in containers:
        assert c.get("name") and c.get("image"), f"{where}: containers need name and image"
        env = {e["name"]: e for e in c.get("env", [])}
        assert env["RAY_AUTH_MODE"]["value"] == "token", where
        assert "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"], f"{where}: the token comes from a Secret"


def _check_cluster_spec(spec: dict, where: str) -> None:
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    assert head.get("serviceType", "ClusterIP") == "ClusterIP", f"{where}: nothing exposed outside the cluster"
    _check_pod_template(head["template"], f"{where}.headGroupSpec")
    assert spec.get("enableInTreeAutoscaling") is True
    for g in spec["workerGroupSpecs"]:
        gw = f"{where}.workerGroupSpecs.{g['groupName']}"
        assert isinstance(g["rayStartParams"], dict), gw
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"], gw
        _check_pod_template(g["template"], gw)
    gpu = [g for g in spec["workerGroupSpecs"] if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]]
    assert gpu, f"{where}: a GPU worker group for training"


def _check_network_policy(docs: list, spec: dict, where: str) -> None:
    """Every pod of the cluster carries one label; a NetworkPolicy admits only pods with it (every
    port) and the KubeRay operator (the dashboard port); the autoscaler sidecar has the token."""
    templates = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    labels = {t["metadata"]["labels"]["adasparse.io/ray"] for t in templates}
    assert len(labels) == 1, where
    (label,) = labels
    (np,) = [d for d in docs if d["kind"] == "NetworkPolicy"]
    assert np["apiVersion"] == "networking.k8s.io/v1" and np["spec"]["policyTypes"] == ["Ingress"]
    assert np["spec"]["podSelector"] == {"matchLabels": {"adasparse.io/ray": label}}
    own, operator = np["spec"]["ingress"]
    assert own == {"from": [{"podSelector": {"matchLabels": {"adasparse.io/ray": label}}}]}
    assert operator["ports"] == [{"port": 8265, "protocol": "TCP"}]
    assert operator["from"][0]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "kuberay-operator"}}
    env = {e["name"]: e for e in spec["autoscalerOptions"]["env"]}
    assert env["RAY_AUTH_MODE"]["value"] == "token" and "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"], where
    return label


def test_kuberay_manifests_admit_only_their_own_pods_and_give_the_autoscaler_the_token():
    docs = _load_all("kuberay-raycluster.yaml")
    _check_network_policy(docs, docs[0]["spec"], "RayCluster")
    docs = _load_all("kuberay-rayjob.yaml")
    label = _check_network_policy(docs, docs[0]["spec"]["rayClusterSpec"], "RayJob")
    assert docs[0]["spec"]["submitterPodTemplate"]["metadata"]["labels"]["adasparse.io/ray"] == label


def test_kuberay_manifests_have_the_fields_the_operator_requires():
    rc = _load("kuberay-raycluster.yaml")
    assert (rc["apiVersion"], rc["kind"]) == ("ray.io/v1", "RayCluster") and rc["metadata"]["name"]
    _check_cluster_spec(rc["spec"], "RayCluster.spec")
    job = _load("kuberay-rayjob.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob") and job["metadata"]["name"]
    assert job["spec"]["entrypoint"].startswith("python -m pipelines.train ")
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    _check_cluster_spec(job["spec"]["rayClusterSpec"], "RayJob.spec.rayClusterSpec")
    # the entry point's options are the training job's own
    from pipelines.train.job_flags import parse_job_args

    opts = job["spec"]["entrypoint"].split()[3:]
    spec = parse_job_args(opts)
    assert spec.resources.gpu and spec.resources.workers >= 1 and spec.data.startswith("s3://")


def _worker_nodes(url: str, env: dict) -> int:
    r = ray_cli("list", "nodes", "--address", url, "--format", "json", "--filter", "state=ALIVE", env=env)
    if r.returncode != 0:
        return -1
    if r.stdout.strip().startswith("No resource"):
        # what the state CLI prints instead of "[]" when no node matches (seen right after
        # the head started, before it registered): no worker node either
        return 0
    return sum(1 for n in json.loads(r.stdout) if not n.get("is_head_node"))


@pytest.mark.slow
def test_local_autoscaling_cluster_adds_nodes_for_a_job_and_removes_them_when_idle(generated, tmp_path):
    import ray._private.services

    gcs = free_port()
    cfg = _load("local-fake-multinode.yaml")
    cfg["provider"]["gcs_address"] = f"{ray._private.services.get_node_ip_address()}:{gcs}"
    config = tmp_path / "autoscaling.yaml"
    config.write_text(yaml.safe_dump(cfg))
    with head_node(tmp_path, f"--autoscaling-config={config}", num_cpus=0, gcs_port=gcs,
                   env_extra={"RAY_FAKE_CLUSTER": "1"}) as (url, env, tree):
        assert _worker_nodes(url, env) == 0
        out = tmp_path / "runs"
        # 2 workers × 2 CPUs: each worker fills a 2-CPU node, so the autoscaler must add two (with
        # 1 CPU each, both fit one node: the workers read their own data, no ingest task asks for more)
        cmd = [str(BIN / "ray"), "job", "submit", "--address", url, "--working-dir", str(ROOT), "--",
               sys.executable, "-m", "pipelines.train", "--data", str(generated / "spec.yaml"), "--workers", "2",
               "--cpus-per-worker", "2", "--epochs", "1", "--batch-size", "512", "--hidden-units", "32,16",
               "--out", str(out), "--name", "scaled"]
        job = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
        peak, deadline = 0, time.time() + 600
        while job.poll() is None and time.time() < deadline:
            peak = max(peak, _worker_nodes(url, env))
            tree.scan()
            time.sleep(2)
        log = job.communicate(timeout=60)[0]
        assert job.returncode == 0 and "succeeded" in log, log[-3000:]
        assert peak >= 2, f"the autoscaler added {peak} nodes"
        assert json.loads((out / "scaled" / "metrics.json").read_text())["test"]["rows"] > 0
        deadline = time.time() + 180  # idle_timeout_minutes 0.25 + autoscaler update period
        while (n := _worker_nodes(url, env)) != 0 and time.time() < deadline:
            tree.scan()
            time.sleep(3)
        assert n == 0, f"{n} idle worker nodes were not removed"


def test_the_cluster_image_is_built_from_the_pinned_versions_and_named_by_the_manifests():
    import re
    import tomllib

    root = Path(__file__).resolve().parents[2]
    docker = (root / "cluster" / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", docker, re.M))
    ray_pin = re.search(r"^ray==(\S+)$", (root / "constraints.txt").read_text(), re.M).group(1)
    assert re.search(r"^FROM rayproject/ray:\$\{BASE_TAG\}$", docker, re.M)
    assert args["BASE_TAG"].startswith(f"{ray_pin}-py311")  # Ray's image at the Ray version CI tests
    torch_pin = re.search(r"^TORCH_SPEC \?= (\S+)$", (root / "Makefile").read_text(), re.M).group(1)
    assert args["TORCH_SPEC"] == torch_pin
    assert '-c constraints.txt ".[ray]"' in docker
    for line in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", docker, re.M):  # everything copied exists
        for src in line.split():
            assert (root / src).exists(), f"Dockerfile copies {src}, which the repository lacks"
    ignored = (root / ".dockerignore").read_text().split()
    assert ".venv/" in ignored and "runs/" in ignored and ".git/" in ignored
    version = tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
    images = set()
    for name in ("kuberay-raycluster.yaml", "kuberay-rayjob.yaml"):
        images |= set(re.findall(r"image: (\S+)", (root / "cluster" / name).read_text()))
    assert images == {f"REGISTRY/adasparse:{version}"}
    assert f"-t REGISTRY/adasparse:{version} ." in (root / "cluster" / "README.md").read_text()
