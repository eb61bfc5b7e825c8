"""The distributed AdaSparse training job (Ray Train ``TorchTrainer``, data parallel).

    adasparse train --data DIR/spec.yaml --model adasparse --formulation fusion --workers 2 --out runs
    python -m pipelines.train ...            # the same, e.g. under ``ray job submit``

Each worker reads its shard of the streamed train split, trains data-parallel with the mean
gradient of all workers every step (:mod:`adasparse.parallel`: dense all-reduce + all-gather of
the touched embedding rows; gloo on CPU, NCCL on GPU), and after every epoch all workers evaluate their dev shard; the
per-worker metric tables are gathered and merged, so dev LogLoss/AUC/GAUC are exact
(:mod:`adasparse.metrics`). Every worker calls ``ray.train.report`` once per epoch (rank 0 adds
the checkpoint: model, optimiser, the best epoch's weights, history; saved with ``torch.save``
and loaded with ``weights_only=True``, written by Ray Train to a temporary directory first).
The best epoch by dev GAUC is evaluated on test at the end and written with everything else to
``OUT/NAME/metrics.json``.

Resume: rerunning with the same ``--name`` (and ``--out``) continues from the run's latest
checkpoint (Ray Train's run snapshot); with ``--max-failures`` > 0 a dead worker makes the
run restart from the last checkpoint (``--fail-at-epoch`` injects such a failure once).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from adasparse.config import ConfigError, ModelConfig, StrictModel, load_yaml, validate


PROGRESS_EVERY_S = 15.0  # rank 0 prints rows/s, loss and data wait this often


class RunSpec(StrictModel):
    """The job's options: the same keys on the command line (``--batch-size``) and in ``--config`` YAML."""

    data: str
    model: Literal["dnn", "adasparse"] = "adasparse"
    formulation: Literal["binarization", "scaling", "fusion"] = "fusion"
    pruner_input: Literal["instance", "domain"] = "instance"
    backbone: Literal["dnn", "dcnv2"] = "dnn"
    hidden_units: list[int] = Field(default_factory=lambda: [128, 64, 32])
    embedding_dim: int = Field(default=16, ge=1)
    beta: float = Field(default=2.0, ge=1.0, description="β of eqs. 6 and 8")
    epsilon: float = Field(default=0.25, gt=0.0, description="ε of eqs. 5 and 8")
    r_min: float = Field(default=0.15, ge=0.0, lt=1.0, description="sparsity boundary, eq. 10")
    r_max: float = Field(default=0.25, gt=0.0, le=1.0, description="sparsity boundary, eq. 10")
    alpha_anneal_steps: int = Field(default=20_000, ge=1, description="steps for α to rise from 0.1 to 5")
    epochs: int = Field(default=2, ge=1)
    batch_size: int = Field(default=256, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    workers: int = Field(default=1, ge=1)
    cpus_per_worker: float | None = Field(
        default=None, gt=0, description="CPUs each worker asks for (default: the cluster's CPUs less one for ingest, shared; 1 with --gpu)")
    threads: int | None = Field(
        default=None, ge=1, description="PyTorch threads per worker (default: its node's CPUs shared among the workers on it)")
    gpu: bool = False
    out: str = Field(default="runs", description="local directory or s3://bucket/prefix for checkpoints and metrics")
    storage_endpoint: str | None = Field(default=None, description="S3-compatible endpoint URL for an s3:// --out (default: AWS)")
    name: str | None = None
    seed: int = 0
    shuffle_buffer: int = Field(default=20_000, ge=0)
    address: str | None = None
    max_failures: int = Field(default=0, ge=0, description="worker failures to recover from (restart from the last checkpoint)")
    fail_at_epoch: int | None = Field(default=None, ge=1, description="fault injection: one worker dies once after this epoch")

    @model_validator(mode="after")
    def _boundary(self) -> "RunSpec":
        if self.r_min >= self.r_max:
            raise ValueError(f"r_min ({self.r_min}) must be below r_max ({self.r_max})")
        return self


def model_config(run: RunSpec, features) -> ModelConfig:
    return ModelConfig(
        kind=run.model,
        backbone=run.backbone,
        hidden_units=run.hidden_units,
        features=features,
        embedding={"dim": run.embedding_dim},
        pruner={"formulation": run.formulation, "input": run.pruner_input, "beta": run.beta, "epsilon": run.epsilon,
                "r_min": run.r_min, "r_max": run.r_max, "alpha_anneal_steps": run.alpha_anneal_steps},
    )


# --- inside each Ray Train worker ---------------------------------------------------------


def _gather_metrics(acc):
    """Merge every worker's metric table (exact, see adasparse.metrics)."""
    import torch.distributed as dist

    from adasparse.metrics import CTRMetrics

    states = [acc.state()]
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        states = [None] * dist.get_world_size()
        dist.all_gather_object(states, acc.state())
    return CTRMetrics.from_states(states)


def _tensor(a, device):
    """A batch column as a tensor on ``device`` (zero-copy on CPU: the batch is never written)."""
    import torch

    with warnings.catch_warnings():  # Ray hands out read-only arrays; we only read them
        warnings.simplefilter("ignore", UserWarning)
        t = torch.from_numpy(a)
    return t if device.type == "cpu" else t.to(device, non_blocking=True)


def _node_threads(local_workers: int, node_cpus: float | None) -> int:
    """Intra-op threads for one of ``local_workers`` train workers on this node: the node's CPUs
    (``node_cpus``, its Ray CPU resource; None: not known) shared among them, never more than
    the cores this process may run on. Ray would give each worker threads for the CPUs it
    *reserves* (a fraction when a CPU is left to Ray Data), but ingest needs a few percent of a
    core at training speed, so the reserved share would leave cores idle (measured in
    benchmarks/train_throughput.py)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cpus = cores if node_cpus is None else min(node_cpus, cores)
    return max(1, int(cpus) // max(1, local_workers))


def _node_cpus() -> dict[str, float]:
    """Every live node's Ray CPU resource, read once by the driver (one GCS call for the whole
    run, not one per worker); a node that joins later is looked up as unknown."""
    import ray

    return {n["NodeID"]: n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive", True)}


def _evaluate(model, shard, batch_size: int):
    import torch

    from adasparse.metrics import CTRMetrics
    from pipelines.ingest import train_batches

    device = next(model.parameters()).device
    model.eval()
    acc, pruned, rows = CTRMetrics(), None, 0
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
        for b in train_batches(shard, max(batch_size, 4096)):
            out = model(_tensor(b["cat_ids"], device), _tensor(b["numeric"], device))
            acc.update(b["domain"], b["label"], logits=out.logits.float().cpu().numpy())
            if out.ratios is not None:
                r = out.ratios.float().cpu().numpy() * len(b["label"])
                pruned = r if pruned is None else pruned + r
            rows += len(b["label"])
    model.train()
    merged = _gather_metrics(acc)
    sparsity = [] if pruned is None else (pruned / max(rows, 1)).tolist()
    return merged, sparsity


def _quiet_report_log() -> None:
    """Ray Train logs every report (all metrics, every rank) at INFO: noise beside our progress
    lines. Its logger is named by the module's file path (Ray 2.60); nothing else is silenced."""
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def train_loop(cfg: dict) -> None:
    import copy

    import numpy as np
    import ray.train
    import torch
    import torch.distributed as dist
    from ray.train import Checkpoint

    from adasparse.config import ModelConfig, OptimConfig
    from adasparse.model import build_model
    from adasparse.optim import build_optimizer
    from adasparse.parallel import GradientAverager
    from pipelines.ingest import EarlyStart, train_batches

    _quiet_report_log()
    device = ray.train.torch.get_device()
    state = meta = None
    resumed = ray.train.get_checkpoint()
    if resumed is not None:  # a rerun of the same run name, or a restart after a worker failure
        with resumed.as_directory() as d:
            # tensors only, no pickled objects
            state = torch.load(os.path.join(d, "state.pt"), weights_only=True, map_location=device)
            meta = json.loads(open(os.path.join(d, "meta.json")).read())
    start = 1 if meta is None else meta["epoch"] + 1

    def epoch_batches(epoch: int):
        return train_batches(ray.train.get_dataset_shard("train"), cfg["batch_size"], cfg["shuffle_buffer"], cfg["seed"] + epoch)

    # the first epoch's stream starts now, while the model and the process group are set up
    first_stream = EarlyStart(epoch_batches(start)) if start <= cfg["epochs"] else None
    torch.manual_seed(cfg["seed"])
    model_cfg = ModelConfig.model_validate(cfg["model"])
    model = build_model(model_cfg).to(device)
    model.check_ids = False  # ids come from adasparse.encoding: always inside their buckets
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    node = ray.get_runtime_context().get_node_id()
    torch.set_num_threads(cfg.get("threads") or _node_threads(ctx.get_local_world_size(), cfg.get("node_cpus", {}).get(node)))
    # data parallel: rank 0's weights everywhere, then the mean gradient every step (see
    # adasparse.parallel for why this is not DistributedDataParallel)
    # (a step touches at most batch × fields table rows: with that bound small exchanges take
    # one collective instead of two)
    lookups = len(model_cfg.features.all_categorical)
    averager = GradientAverager(model, max_rows=cfg["batch_size"] * lookups) if world > 1 else None
    opt = build_optimizer(model, OptimConfig(lr=cfg["lr"]))
    # mixed precision on GPU: bfloat16 autocast (same exponent range as float32, no loss scaling)
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    best: dict | None = None
    history: list = []
    if state is not None:
        model.load_state_dict(state["model"])
        if "optim" in state:
            opt.load_state_dict(state["optim"])
        best = {"epoch": meta["best_epoch"], "dev": meta["best_dev"], "sparsity": meta["best_sparsity"], "state": state["best_model"]}
        history = meta["history"]
    if averager is not None:
        averager.broadcast_parameters(model)

    def save(extra: dict, with_optim: bool, files: dict | None = None):
        """Rank 0 writes a checkpoint directory (others return None)."""
        if rank != 0:
            return None
        tmp = tempfile.mkdtemp()
        state = {"model": model.state_dict(), "best_model": best["state"]}
        if with_optim:
            state["optim"] = opt.state_dict()
        torch.save(state, os.path.join(tmp, "state.pt"))
        meta = {"best_epoch": best["epoch"], "best_dev": best["dev"], "best_sparsity": best["sparsity"], "history": history, **extra}
        for name, content in {"meta.json": meta, "model_config.json": model_cfg.model_dump(), **(files or {})}.items():
            with open(os.path.join(tmp, name), "w") as fh:
                json.dump(content, fh, default=float)
        return Checkpoint.from_directory(tmp)

    # this run's placement group, reported so that a sweep can free it if Tune stops the run
    pg = ray.util.get_current_placement_group()
    pg_hex = pg.id.hex() if pg is not None else ""
    seen, busy = 0, 0.0
    for epoch in range(start, cfg["epochs"] + 1):
        t0 = time.perf_counter()
        losses, n, wait, sync, shown, first_wait = [], 0, 0.0, 0.0, t0, None
        it = iter(first_stream if epoch == start else epoch_batches(epoch))
        while True:
            tw = time.perf_counter()
            b = next(it, None)
            wait += time.perf_counter() - tw
            if first_wait is None:
                first_wait = wait  # the stream's start-up: Ray Data plans the read and starts its tasks
            if b is None:
                break
            opt.zero_grad()
            with amp:
                out = model(_tensor(b["cat_ids"], device), _tensor(b["numeric"], device))
                obj = model.objective(out, _tensor(b["label"], device))
            obj.total.backward()
            if averager is not None:
                ts = time.perf_counter()
                averager.average()
                sync += time.perf_counter() - ts
            opt.step()
            losses.append(float(obj.total.detach()))
            n += len(b["label"])
            if rank == 0 and time.perf_counter() - shown > PROGRESS_EVERY_S:
                shown = time.perf_counter()
                el = shown - t0
                # sys.stdout, not print: Ray Train's patched print would emit every line twice
                sys.stdout.write(f"[train] epoch {epoch}: {n * world:,} rows, {n * world / el:,.0f} rows/s, "
                                 f"loss {np.mean(losses[-200:]):.4f}, waiting for data {100 * wait / el:.0f}% of the time\n")
                sys.stdout.flush()
        train_s = time.perf_counter() - t0
        busy += train_s
        seen += n
        dev, sparsity = _evaluate(model, ray.train.get_dataset_shard("dev"), cfg["batch_size"])
        dev_m = dev.compute()
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan"),
               "rows_per_s_worker": n / max(train_s, 1e-9), "data_wait_s": wait, "first_batch_s": first_wait, "grad_sync_s": sync,
               "grad_sync_phases_s": averager.reset_timings() if averager is not None else {},
               "train_s": train_s, "threads": torch.get_num_threads(),
               **{f"dev_{k}": v for k, v in dev_m.items()}, "sparsity": sparsity}
        history.append(row)
        if best is None or dev_m["gauc"] > best["dev"]["gauc"]:
            best = {"epoch": epoch, "dev": dev_m, "sparsity": sparsity, "state": copy.deepcopy(model.state_dict())}
        checkpoint = save({"epoch": epoch, "final": False}, with_optim=True)
        ray.train.report({k: v for k, v in row.items() if k not in ("sparsity", "grad_sync_phases_s")}
                         | {"final": False, "placement_group": pg_hex},
                         checkpoint=checkpoint)
        marker = cfg.get("fail_marker")
        if cfg.get("fail_at_epoch") == epoch and rank == world - 1 and marker and not os.path.exists(marker):
            open(marker, "w").close()  # fault injection (tests): this worker dies once, after the checkpoint
            os._exit(1)
    exchange = "none (one worker)"
    if averager is not None:
        exchange = averager.transport
        averager.close()
    model.load_state_dict(best["state"])
    test, test_sparsity = _evaluate(model, ray.train.get_dataset_shard("test"), cfg["batch_size"])
    per = test.per_domain()
    samples = torch.tensor([seen, busy], dtype=torch.float64)
    if world > 1 and dist.is_initialized():
        dist.all_reduce(samples)
    final = {
        "best_epoch": best["epoch"],
        "dev": best["dev"],
        "test": test.compute(),
        "sparsity": {"dev": best["sparsity"], "test": test_sparsity},
        "samples_per_s": float(samples[0] / max(samples[1] / world, 1e-9)) if samples[1] > 0 else None,
        "grad_exchange": exchange,
        "history": history,
        "test_per_domain": [
            {"domain": int(d), "rows": int(r), "ctr": float(c), "auc": None if np.isnan(a) else float(a)}
            for d, r, c, a in zip(per.domain, per.rows, per.ctr, per.auc)
        ],
    }
    # The final report carries a checkpoint (the best epoch's weights and every final figure,
    # per-domain rows included) so the driver reads them from storage, not from the metrics
    # stream; its reported metrics stay small. Rerunning a finished run re-evaluates from it.
    checkpoint = save({"epoch": cfg["epochs"], "final": True}, with_optim=False, files={"final.json": final})
    ray.train.report(
        # no "epoch" key: an epoch-based scheduler (ASHA in adasparse tune) must not read this as one
        {"final": True, "best_epoch": best["epoch"], "dev_gauc": best["dev"]["gauc"], "test_gauc": final["test"]["gauc"]},
        checkpoint=checkpoint,
    )


# --- driver ---------------------------------------------------------------------------------


class OutputLocation:
    """Where a run writes: a local (or shared) directory, or ``s3://bucket/prefix``.

    Ray Train stores checkpoints there itself (``storage_path`` + ``storage_filesystem``); the
    driver adds ``metrics.json`` and ``config.json``. Local files are written to a temporary
    name and renamed; an S3 object appears whole with its single PUT, so no reader ever sees
    half a file. S3 credentials come from the environment or the instance role."""

    def __init__(self, fs, root: str, scheme: str):
        self.fs, self.root, self.scheme = fs, root, scheme

    @classmethod
    def of(cls, spec: "RunSpec") -> "OutputLocation":
        import fsspec

        if spec.out.startswith("s3://"):
            from pipelines.sources import s3_filesystem

            return cls(s3_filesystem(spec.storage_endpoint), spec.out.removeprefix("s3://").rstrip("/"), "s3")
        if "://" in spec.out and not spec.out.startswith("file://"):
            raise ConfigError(f"--out {spec.out}: give a local directory or s3://bucket/prefix")
        return cls(fsspec.filesystem("file"), str(Path(spec.out.removeprefix("file://")).resolve()), "file")

    def join(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def url(self, path: str) -> str:
        return path if self.scheme == "file" else f"s3://{path}"

    def arrow_fs(self):
        if self.scheme == "file":
            return None
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        return PyFileSystem(FSSpecHandler(self.fs))

    def write_text(self, path: str, text: str) -> None:
        if self.scheme == "file":
            tmp = Path(path + ".tmp")
            tmp.write_text(text)
            tmp.replace(path)
        else:
            self.fs.pipe(path, text.encode())

    def fault_marker(self, name: str) -> str:
        """Fault injection's once-only marker: a local file (workers of a test share the machine)."""
        if self.scheme == "file":
            return self.join(name, ".fault_injected")
        return os.path.join(tempfile.gettempdir(), f"adasparse-{name}.fault_injected")



def run(spec: RunSpec, log=print, callbacks: list | None = None, cpu_budget: float | None = None) -> dict:
    """Train, pick the best epoch, test it, write ``OUT/NAME/metrics.json``; returns its content.

    ``callbacks``: extra Ray Train callbacks (``adasparse tune`` forwards reports to Tune);
    ``cpu_budget``: CPUs this run may use (default: the whole cluster)."""
    import ray
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pipelines.ingest import open_source, read_split, time_cuts
    from pipelines.ray_env import init_ray
    from pipelines.spec import load_spec

    data = load_spec(spec.data)
    source = open_source(data)
    init_ray(spec.address)
    if spec.gpu and not ray.cluster_resources().get("GPU"):
        raise ConfigError("--gpu: the Ray cluster has no GPU")
    cuts = time_cuts(source) if data.split_files is None else None
    datasets = {s: read_split(source, s, cuts, shuffle_files=(s == "train")) for s in ("train", "dev", "test")}
    name = spec.name or f"{spec.model}-{spec.formulation if spec.model == 'adasparse' else spec.backbone}"
    out = OutputLocation.of(spec)
    cpus = cpu_budget or ray.cluster_resources().get("CPU", 1)
    # leave about one CPU to Ray Data's read/encode tasks, or the workers starve ingest forever
    per_worker = max(0.1, min(1.0, (cpus - 1) / spec.workers)) if not spec.gpu else 1.0
    if spec.cpus_per_worker is not None:  # e.g. on an autoscaling cluster: ask, and nodes are added to fit
        per_worker = spec.cpus_per_worker
    cfg = {
        "model": model_config(spec, data.features).model_dump(),
        "lr": spec.lr, "epochs": spec.epochs, "batch_size": spec.batch_size, "seed": spec.seed,
        "shuffle_buffer": spec.shuffle_buffer, "threads": spec.threads,
        "node_cpus": _node_cpus() if spec.threads is None else {},
        "fail_at_epoch": spec.fail_at_epoch,
        "fail_marker": out.fault_marker(name) if spec.fail_at_epoch else None,
    }
    out.fs.makedirs(out.join(name), exist_ok=True)
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=cfg,
        scaling_config=ScalingConfig(num_workers=spec.workers, use_gpu=spec.gpu, resources_per_worker={"CPU": per_worker}),
        run_config=RunConfig(
            name=name,
            storage_path=out.root,
            storage_filesystem=out.arrow_fs(),
            checkpoint_config=CheckpointConfig(num_to_keep=2, checkpoint_score_attribute="dev_gauc", checkpoint_score_order="max"),
            failure_config=FailureConfig(max_failures=spec.max_failures),
            callbacks=list(callbacks or []),
        ),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split="all"),
    )
    t0 = time.perf_counter()
    result = trainer.fit()
    if result.error:
        raise result.error
    with result.checkpoint.as_directory() as ckpt:
        final = json.loads(Path(ckpt, "final.json").read_text())
    final["best_checkpoint"] = out.url(result.checkpoint.path)
    final["wall_s"] = time.perf_counter() - t0
    final["config"] = spec.model_dump()
    final["model_config"] = cfg["model"]
    out.write_text(out.join(name, "metrics.json"), json.dumps(final, indent=2, default=str))
    out.write_text(out.join(name, "config.json"), json.dumps(spec.model_dump(), indent=2))
    t, d = final["test"], final["dev"]
    speed = f"{final['samples_per_s']:,.0f} samples/s" if final.get("samples_per_s") else "resumed after training"
    log(f"{name}: best epoch {final['best_epoch']}  dev GAUC {d['gauc']:.4f}  test logloss {t['logloss']:.5f} "
        f"AUC {t['auc']:.4f} GAUC {t['gauc']:.4f}  ({speed})  -> {out.url(out.join(name, 'metrics.json'))}")
    return final


def add_run_options(p: argparse.ArgumentParser) -> None:
    """``--config`` plus one flag per :class:`RunSpec` key (shared with ``adasparse tune``)."""
    p.add_argument("--config", help="YAML run config with the same keys (flags override it)")
    for key, field in RunSpec.model_fields.items():
        flag = "--" + key.replace("_", "-")
        if field.annotation is bool:
            p.add_argument(flag, action="store_const", const=True, default=None)
        elif key == "hidden_units":
            p.add_argument(flag, type=lambda s: [int(x) for x in s.split(",")], default=None, help="e.g. 128,64,32")
        else:
            p.add_argument(flag, default=None)


def run_options(args: dict) -> dict:
    """The options given: the ``--config`` file's keys overridden by the flags set (unvalidated)."""
    base = load_yaml(args["config"]) if args.get("config") else {}
    if base is None:
        base = {}
    if not isinstance(base, dict):
        raise ConfigError(f"{args['config']}: expected a mapping of run options")
    return {**base, **{k: v for k, v in args.items() if k in RunSpec.model_fields and v is not None}}


def parse_args(argv: list[str] | None = None) -> RunSpec:
    p = argparse.ArgumentParser(prog="adasparse train", description="train AdaSparse or the plain backbone on Ray Train")
    add_run_options(p)
    return validate(RunSpec, run_options(vars(p.parse_args(argv))), "options")


def main(argv: list[str] | None = None) -> int:
    from adasparse.cli import run_command

    def body() -> None:
        run(parse_args(argv))

    return run_command("adasparse train", body)


if __name__ == "__main__":
    sys.exit(main())
