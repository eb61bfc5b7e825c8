"""The training job's config: one typed object composed of the library's configs and the job's own parts.

    data: runs/demo/data/spec.yaml          # the dataset spec: files, columns, features
    model:                                  # adasparse.config.ModelSpec (the features come from data)
      kind: adasparse                       # plain | adasparse
      backbone: dnn
      pruner: {formulation: fusion, beta: 2.0, r_min: 0.15, r_max: 0.25}
    optim: {lr: 0.001}                      # adasparse.config.OptimConfig
    train: {epochs: 2, batch_size: 256}     # adasparse.config.TrainConfig (the loop)
    ingest: {shuffle_buffer: 20000}         # the job's own parts from here on
    resources: {workers: 2}
    output: {dir: runs, name: my-run}
    faults: {max_failures: 0}

Every bound is declared once, on the typed part that owns it. The same keys reach the job from
YAML (``--config``), from the command line (``--model.pruner.beta 2``, see
:mod:`pipelines.train.job_flags`) and from a sweep's space (:mod:`pipelines.sweep.tune_space`). The
round-1 flat keys (``beta``, ``epochs``, ``workers``, ``out`` ...) and the model's sections
without their ``model.`` prefix (``pruner.beta``, ``embedding.dim``) are spellings of the same
paths, resolved here and nowhere else (:data:`ALIASES`, :func:`resolve_key`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from adasparse.config import (
    ConfigError,
    FeatureConfig,
    ModelConfig,
    ModelSpec,
    OptimConfig,
    StrictModel,
    TrainConfig,
    load_yaml,
    validate,
)


class IngestOptions(StrictModel):
    """How the train split streams into the workers: each reads its own seeded deal of the train
    row groups (:mod:`pipelines.data.train_stream`: every row once, exact mid-epoch resume)."""

    @model_validator(mode="before")
    @classmethod
    def _one_train_reader(cls, data: Any) -> Any:
        """``train_reader`` (two readers until 2026-12-02): ``assigned``, the one reader left, is
        accepted and dropped, so configs written then still load; ``streaming_split`` is refused."""
        if isinstance(data, dict) and "train_reader" in data:
            data = dict(data)
            if data.pop("train_reader") != "assigned":
                raise ValueError("train_reader: Ray Data's streaming split is gone; every run reads each worker's own "
                                 "stream (remove the option)")
        return data

    shuffle_buffer: int = Field(
        default=20_000, ge=0,
        description="rows shuffled together in each worker: its row groups are read in windows of at least this many rows, "
                    "each window's rows permuted (pipelines/data/train_stream.py); 0: the files' order")
    domain_fields: list[str] | None = Field(
        default=None, min_length=1,
        description="the columns that form the domain key (default: the spec's domain fields); the spec's other domain "
                    "fields then feed the model as hashed inputs")
    domain_min_count: int = Field(
        default=2, ge=1,
        description="train rows a domain-aware value needs for an id of its own; rarer and unseen values share the trained "
                    "out-of-vocabulary id")
    check_data: bool = Field(
        default=True,
        description="check every file's labels, times and numeric values before training (pipelines/data/validation.py)")


class ResourceOptions(StrictModel):
    """Where the job runs and what it asks of the cluster."""

    workers: int = Field(default=1, ge=1, description="Ray Train workers (data parallel)")
    cpus_per_worker: float | None = Field(
        default=None, gt=0, description="CPUs each worker asks for (default: the cluster's CPUs less one for ingest, shared; 1 with gpu)")
    threads: int | None = Field(
        default=None, ge=1, description="PyTorch threads per worker (default: its node's CPUs shared among the workers on it)")
    gpu: bool = Field(default=False, description="one GPU per worker")
    trainer: Literal["auto", "ray_train", "in_process"] = Field(
        default="auto",
        description="who runs the workers: ray_train (Ray Train's worker group), in_process (one worker, trained in the "
                    "process that runs the job: a command on its private local Ray, or a sweep's trial), or auto: in_process "
                    "for one worker that needs no worker-failure recovery (max_failures 0) there, else ray_train")
    address: str | None = Field(default=None, description="Ray cluster address (default: RAY_ADDRESS, else a private local Ray)")
    startup_timeout_s: float = Field(
        default=900.0, gt=0,
        description="on a cluster given by address: how long to wait for the workers' resources (autoscaling) before "
                    "giving up with an error")


class OutputOptions(StrictModel):
    """Where checkpoints and metrics go."""

    dir: str = Field(default="runs", description="local directory or s3://bucket/prefix for checkpoints and metrics")
    name: str | None = Field(default=None, description="run name (default: <kind>-<formulation or backbone>); a rerun resumes it")
    storage_endpoint: str | None = Field(default=None, description="S3-compatible endpoint URL for an s3:// dir (default: AWS)")


class FaultOptions(StrictModel):
    """Recovery from worker failures, and the fault injection its tests use."""

    max_failures: int = Field(default=0, ge=0, description="worker failures to recover from (restart from the last checkpoint)")
    checkpoint_every_steps: int | None = Field(
        default=None, ge=1, description="also checkpoint within an epoch every this many updates")
    checkpoint_every_minutes: float | None = Field(
        default=30.0, gt=0,
        description="also checkpoint within an epoch when this many minutes passed since the last checkpoint (none: only "
                    "at epoch ends)")
    keep_checkpoints: int = Field(
        default=2, ge=1, description="checkpoints kept in the run's storage (the newest; each holds the best epoch's weights)")
    controller_poll_s: float = Field(
        default=0.25, gt=0, le=60,
        description="seconds between Ray Train's controller polls of the workers (each poll takes one report per worker "
                    "and checks that they live; Ray's own default, 2 s, holds back every report made sooner)")
    fail_at_epoch: int | None = Field(default=None, ge=1, description="fault injection: one worker dies once after this epoch")


class JobConfig(StrictModel):
    """Everything one training run needs, in typed parts."""

    data: str = Field(description="dataset spec YAML (local or s3://)")
    model: ModelSpec = Field(default_factory=ModelSpec)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    ingest: IngestOptions = Field(default_factory=IngestOptions)
    resources: ResourceOptions = Field(default_factory=ResourceOptions)
    output: OutputOptions = Field(default_factory=OutputOptions)
    faults: FaultOptions = Field(default_factory=FaultOptions)

    @property
    def run_name(self) -> str:
        m = self.model
        return self.output.name or f"{m.kind}-{m.pruner.formulation if m.kind == 'adasparse' else m.backbone}"

    def model_for(self, features: FeatureConfig) -> ModelConfig:
        return self.model.with_features(features)


# The round-1 flat keys (flags and YAML), each a spelling of one path. ``model`` is the
# family when its value is a name (``model: adasparse``) and the model section when a mapping.
ALIASES: dict[str, tuple[str, ...]] = {
    "model": ("model", "kind"),
    "backbone": ("model", "backbone"),
    "hidden_units": ("model", "hidden_units"),
    "cross_layers": ("model", "cross_layers"),
    "embedding_dim": ("model", "embedding", "dim"),
    "formulation": ("model", "pruner", "formulation"),
    "pruner_input": ("model", "pruner", "input"),
    "beta": ("model", "pruner", "beta"),
    "epsilon": ("model", "pruner", "epsilon"),
    "r_min": ("model", "pruner", "r_min"),
    "r_max": ("model", "pruner", "r_max"),
    "lr": ("optim", "lr"),
    "epochs": ("train", "epochs"),
    "batch_size": ("train", "batch_size"),
    "seed": ("train", "seed"),
    "shuffle_buffer": ("ingest", "shuffle_buffer"),
    "workers": ("resources", "workers"),
    "cpus_per_worker": ("resources", "cpus_per_worker"),
    "threads": ("resources", "threads"),
    "gpu": ("resources", "gpu"),
    "address": ("resources", "address"),
    "out": ("output", "dir"),
    "name": ("output", "name"),
    "storage_endpoint": ("output", "storage_endpoint"),
    "max_failures": ("faults", "max_failures"),
    "fail_at_epoch": ("faults", "fail_at_epoch"),
}
# the model's sections, also reachable without the ``model.`` prefix (``--pruner.beta 2``)
MODEL_SECTIONS = ("pruner", "embedding", "star", "apg", "pepnet", "maml")


def resolve_key(key: str) -> tuple[str, ...]:
    """Any spelling of an option (``beta``, ``pruner.beta``, ``model.pruner.beta``, ``r-min``)
    → its path in :class:`JobConfig`. Unknown keys keep their own path (validation names them)."""
    key = key.replace("-", "_")
    if key in ALIASES:
        return ALIASES[key]
    parts = tuple(key.split("."))
    if parts[0] in MODEL_SECTIONS:
        return ("model", *parts)
    return parts


def _leaves(options: dict, prefix: tuple[str, ...] = ()):
    """(spelling, path, value) of every leaf; a mapping value is a section (JobConfig has no
    mapping-valued option), so its keys are that section's, spelt exactly."""
    for key, value in options.items():
        key = str(key)
        if prefix:
            path = (*prefix, key)
        elif key == "model" and isinstance(value, dict):
            path = ("model",)
        else:
            path = resolve_key(key)
        if isinstance(value, dict) and value:
            yield from _leaves(value, path)
        else:
            yield ".".join((*prefix, key)) if prefix else key, path, value


def set_path(tree: dict, path: tuple[str, ...], value: Any) -> None:
    node = tree
    for p in path[:-1]:
        node = node.setdefault(p, {})
    node[path[-1]] = value


def nest(options: dict[str, Any], source: str) -> dict:
    """Flat or nested options in any spelling → the nested mapping :class:`JobConfig` reads.
    One option given twice (two spellings) with two values is an error naming both."""
    if not isinstance(options, dict):
        raise ConfigError(f"{source}: expected a mapping of run options, got {type(options).__name__}")
    tree: dict = {}
    given: dict[tuple[str, ...], tuple[str, Any]] = {}
    for key, path, value in _leaves(options):
        if path in given and given[path][1] != value:
            raise ConfigError(f"{source}: {given[path][0]} and {key} set one option ({'.'.join(path)}) to two values")
        given[path] = (key, value)
        try:
            set_path(tree, path, value)
        except (AttributeError, TypeError):
            raise ConfigError(f"{source}: {key}: {'.'.join(path[:-1])} is given a value, not a mapping of options") from None
    return tree


def deep_merge(base: dict, over: dict) -> dict:
    """``over``'s values replace ``base``'s, mapping by mapping."""
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config_file(path: str | Path) -> dict:
    """A run config YAML, nested and checked on its own (its errors name the file; ``data`` may be
    left to the command line)."""
    raw = load_yaml(path)
    tree = nest({} if raw is None else raw, str(path))
    validate(JobConfig, {"data": "-", **tree}, str(path))
    return tree


def job_config(options: dict[str, Any], config_file: str | None = None, source: str = "options") -> JobConfig:
    """The job config from a ``--config`` file (optional) overridden by ``options`` (any spelling)."""
    base = load_config_file(config_file) if config_file else {}
    return validate(JobConfig, deep_merge(base, nest(options, source)), source)


def dump_config(cfg: JobConfig) -> dict:
    """The config as YAML-ready nested options (what ``--config`` reads back)."""
    return cfg.model_dump(mode="json", exclude_none=True)


__all__ = ["ALIASES", "FaultOptions", "IngestOptions", "JobConfig", "MODEL_SECTIONS", "OutputOptions", "ResourceOptions",
           "deep_merge", "dump_config", "job_config", "load_config_file", "nest", "resolve_key", "set_path"]
