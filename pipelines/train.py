"""The distributed AdaSparse training job (Ray Train ``TorchTrainer``, data parallel).

    adasparse train --data DIR/spec.yaml --model adasparse --formulation fusion --workers 2 --out runs
    python -m pipelines.train ...            # the same, e.g. under ``ray job submit``

Each worker reads its shard of the streamed train split, trains with DDP (gloo on CPU, sparse
embedding gradients included), and after every epoch all workers evaluate their dev shard; the
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
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal

from pydantic import Field

from adasparse.config import ConfigError, ModelConfig, StrictModel, load_yaml, validate


class RunSpec(StrictModel):
    """The job's options: the same keys on the command line (``--batch-size``) and in ``--config`` YAML."""

    data: str
    model: Literal["dnn", "adasparse"] = "adasparse"
    formulation: Literal["binarization", "scaling", "fusion"] = "fusion"
    pruner_input: Literal["instance", "domain"] = "instance"
    backbone: Literal["dnn", "dcnv2"] = "dnn"
    hidden_units: list[int] = Field(default_factory=lambda: [128, 64, 32])
    embedding_dim: int = Field(default=16, ge=1)
    epochs: int = Field(default=2, ge=1)
    batch_size: int = Field(default=256, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    workers: int = Field(default=1, ge=1)
    gpu: bool = False
    out: str = "runs"
    name: str | None = None
    seed: int = 0
    shuffle_buffer: int = Field(default=20_000, ge=0)
    address: str | None = None
    max_failures: int = Field(default=0, ge=0, description="worker failures to recover from (restart from the last checkpoint)")
    fail_at_epoch: int | None = Field(default=None, ge=1, description="fault injection: one worker dies once after this epoch")


def model_config(run: RunSpec, features) -> ModelConfig:
    return ModelConfig(
        kind=run.model,
        backbone=run.backbone,
        hidden_units=run.hidden_units,
        features=features,
        embedding={"dim": run.embedding_dim},
        pruner={"formulation": run.formulation, "input": run.pruner_input},
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


def _evaluate(model, shard, batch_size: int):
    import torch

    from adasparse.metrics import CTRMetrics

    model.eval()
    acc, pruned, rows = CTRMetrics(), None, 0
    with torch.no_grad():
        for b in shard.iter_batches(batch_size=max(batch_size, 4096), batch_format="numpy"):
            out = model(torch.from_numpy(b["cat_ids"]), torch.from_numpy(b["numeric"]))
            acc.update(b["domain"], b["label"], logits=out.logits.numpy())
            if out.ratios is not None:
                r = out.ratios.numpy() * len(b["label"])
                pruned = r if pruned is None else pruned + r
            rows += len(b["label"])
    model.train()
    merged = _gather_metrics(acc)
    sparsity = [] if pruned is None else (pruned / max(rows, 1)).tolist()
    return merged, sparsity


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

    torch.manual_seed(cfg["seed"])
    model_cfg = ModelConfig.model_validate(cfg["model"])
    model = build_model(model_cfg)
    model.check_ids = False  # ids come from adasparse.encoding: always inside their buckets
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    wrapped = model
    if world > 1:
        wrapped = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=False)
    opt = build_optimizer(model, OptimConfig(lr=cfg["lr"]))
    best: dict | None = None
    history: list = []
    start = 1
    resumed = ray.train.get_checkpoint()
    if resumed is not None:  # a rerun of the same run name, or a restart after a worker failure
        with resumed.as_directory() as d:
            state = torch.load(os.path.join(d, "state.pt"), weights_only=True)  # tensors only, no pickled objects
            meta = json.loads(open(os.path.join(d, "meta.json")).read())
        model.load_state_dict(state["model"])
        if "optim" in state:
            opt.load_state_dict(state["optim"])
        best = {"epoch": meta["best_epoch"], "dev": meta["best_dev"], "sparsity": meta["best_sparsity"], "state": state["best_model"]}
        history, start = meta["history"], meta["epoch"] + 1

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

    seen, busy = 0, 0.0
    for epoch in range(start, cfg["epochs"] + 1):
        shard = ray.train.get_dataset_shard("train")
        t0 = time.perf_counter()
        losses, n = [], 0
        for b in shard.iter_batches(
            batch_size=cfg["batch_size"], batch_format="numpy",
            local_shuffle_buffer_size=cfg["shuffle_buffer"] or None, local_shuffle_seed=cfg["seed"] + epoch,
        ):
            opt.zero_grad()
            out = wrapped(torch.from_numpy(b["cat_ids"]), torch.from_numpy(b["numeric"]))
            obj = model.objective(out, torch.from_numpy(b["label"]))
            obj.total.backward()
            opt.step()
            losses.append(float(obj.total.detach()))
            n += len(b["label"])
        busy += time.perf_counter() - t0
        seen += n
        dev, sparsity = _evaluate(model, ray.train.get_dataset_shard("dev"), cfg["batch_size"])
        dev_m = dev.compute()
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan"),
               "rows_per_s_worker": n / max(time.perf_counter() - t0, 1e-9),
               **{f"dev_{k}": v for k, v in dev_m.items()}, "sparsity": sparsity}
        history.append(row)
        if best is None or dev_m["gauc"] > best["dev"]["gauc"]:
            best = {"epoch": epoch, "dev": dev_m, "sparsity": sparsity, "state": copy.deepcopy(model.state_dict())}
        checkpoint = save({"epoch": epoch, "final": False}, with_optim=True)
        ray.train.report({k: v for k, v in row.items() if k != "sparsity"} | {"final": False}, checkpoint=checkpoint)
        marker = cfg.get("fail_marker")
        if cfg.get("fail_at_epoch") == epoch and rank == world - 1 and marker and not os.path.exists(marker):
            open(marker, "w").close()  # fault injection (tests): this worker dies once, after the checkpoint
            os._exit(1)
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
        {"final": True, "epoch": best["epoch"], "dev_gauc": best["dev"]["gauc"], "test_gauc": final["test"]["gauc"]},
        checkpoint=checkpoint,
    )


# --- driver ---------------------------------------------------------------------------------


def run(spec: RunSpec, log=print) -> dict:
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
    out = Path(spec.out).resolve()
    cpus = ray.cluster_resources().get("CPU", 1)
    # leave about one CPU to Ray Data's read/encode tasks, or the workers starve ingest forever
    per_worker = max(0.1, min(1.0, (cpus - 1) / spec.workers)) if not spec.gpu else 1.0
    cfg = {
        "model": model_config(spec, data.features).model_dump(),
        "lr": spec.lr, "epochs": spec.epochs, "batch_size": spec.batch_size, "seed": spec.seed,
        "shuffle_buffer": spec.shuffle_buffer,
        "fail_at_epoch": spec.fail_at_epoch,
        "fail_marker": str(out / name / ".fault_injected") if spec.fail_at_epoch else None,
    }
    (out / name).mkdir(parents=True, exist_ok=True)
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=cfg,
        scaling_config=ScalingConfig(num_workers=spec.workers, use_gpu=spec.gpu, resources_per_worker={"CPU": per_worker}),
        run_config=RunConfig(
            name=name,
            storage_path=str(out),
            checkpoint_config=CheckpointConfig(num_to_keep=2, checkpoint_score_attribute="dev_gauc", checkpoint_score_order="max"),
            failure_config=FailureConfig(max_failures=spec.max_failures),
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
    final["best_checkpoint"] = result.checkpoint.path
    final["wall_s"] = time.perf_counter() - t0
    final["config"] = spec.model_dump()
    final["model_config"] = cfg["model"]
    run_dir = out / name
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / "metrics.json.tmp"
    tmp.write_text(json.dumps(final, indent=2, default=str))
    tmp.replace(run_dir / "metrics.json")
    (run_dir / "config.json").write_text(json.dumps(spec.model_dump(), indent=2))
    t, d = final["test"], final["dev"]
    speed = f"{final['samples_per_s']:,.0f} samples/s" if final.get("samples_per_s") else "resumed after training"
    log(f"{name}: best epoch {final['best_epoch']}  dev GAUC {d['gauc']:.4f}  test logloss {t['logloss']:.5f} "
        f"AUC {t['auc']:.4f} GAUC {t['gauc']:.4f}  ({speed})  -> {run_dir / 'metrics.json'}")
    return final


def parse_args(argv: list[str] | None = None) -> RunSpec:
    p = argparse.ArgumentParser(prog="adasparse train", description="train AdaSparse or the plain backbone on Ray Train")
    p.add_argument("--config", help="YAML run config with the same keys (flags override it)")
    for key, field in RunSpec.model_fields.items():
        flag = "--" + key.replace("_", "-")
        if field.annotation is bool:
            p.add_argument(flag, action="store_const", const=True, default=None)
        elif key == "hidden_units":
            p.add_argument(flag, type=lambda s: [int(x) for x in s.split(",")], default=None, help="e.g. 128,64,32")
        else:
            p.add_argument(flag, default=None)
    args = vars(p.parse_args(argv))
    base = load_yaml(args.pop("config")) if args.get("config") else {}
    if base is None:
        base = {}
    merged = {**base, **{k: v for k, v in args.items() if v is not None}}
    return validate(RunSpec, merged, "options")


def main(argv: list[str] | None = None) -> int:
    from adasparse.cli import _user_error

    try:
        run(parse_args(argv))
    except Exception as err:
        msg = _user_error(err)
        if msg is None:
            raise
        print(f"adasparse train: {msg}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
