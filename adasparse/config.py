"""Typed model configuration, validated from YAML.

Every default is the paper's (§4.1.2) unless its docstring says it was measured here:
β=2, ε=0.25, α from 0.1 to 5, [r_min, r_max] = [0.15, 0.25], hidden sizes {128, 64, 32},
Adam with learning rate 0.001.

Validation errors are raised as :class:`ConfigError`, one line naming the file and the key,
e.g. ``model.yaml: pruner.beta: Input should be greater than or equal to 1``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from adasparse.errors import UserError


class ConfigError(UserError):
    """A configuration value is missing, unknown or out of range (one-line message)."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CategoricalField(StrictModel):
    """A categorical input hashed into ``buckets`` rows of its own slice of the embedding table."""

    name: str = Field(min_length=1)
    buckets: int = Field(ge=2, description="hash buckets of this field (no vocabulary pass)")


class FeatureConfig(StrictModel):
    """Which inputs the network sees.

    ``domain_fields`` are the domain-aware features x^d whose embeddings form e_d (§2);
    ``categorical_fields`` are the domain-agnostic x^a (their embeddings and the numeric
    embeddings form e_a). The network input is [e_d, e_a].
    """

    domain_fields: list[CategoricalField] = Field(min_length=1)
    categorical_fields: list[CategoricalField] = Field(default_factory=list)
    numeric_fields: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> "FeatureConfig":
        seen: set[str] = set()
        for name in [f.name for f in self.domain_fields + self.categorical_fields] + list(self.numeric_fields):
            if name in seen:
                raise ValueError(f"field {name!r} is listed twice")
            seen.add(name)
        return self

    @property
    def all_categorical(self) -> list[CategoricalField]:
        """Domain-aware fields first, then domain-agnostic: the column order of ``cat_ids``."""
        return list(self.domain_fields) + list(self.categorical_fields)

    @property
    def num_domain_fields(self) -> int:
        return len(self.domain_fields)


class EmbeddingConfig(StrictModel):
    """Hashed embedding tables.

    ``init_std`` (N(0, init_std) initialisation) was measured on generated multi-domain data,
    see docs/model.md "Embedding initialisation"; the optimiser of the tables is sparse Adam
    (row-wise updates), see :mod:`adasparse.optim`.
    """

    dim: int = Field(default=16, ge=1, description="embedding size of every field")
    init_std: float = Field(default=0.1, gt=0, description="σ of the N(0, σ) initialisation of the tables")
    sharding: Literal["replicated", "table_wise", "column_wise", "row_wise", "auto"] = Field(
        default="replicated",
        description="replicated: every worker holds every table; otherwise the domain-agnostic fields' tables "
                    "are sharded over the workers by TorchRec (auto: its planner chooses); see docs/sharding.md",
    )


class PrunerConfig(StrictModel):
    """The domain-adaptive pruner (eqs. 2–8) and its sparsity regularizer (eqs. 9–10)."""

    formulation: Literal["binarization", "scaling", "fusion"] = Field(default="fusion", description="eqs. 4-5, 6-7 or 8")
    input: Literal["instance", "domain"] = Field(
        default="instance",
        description="instance: π^l from [e_d; h^l] (eq. 3); domain: π^l from e_d alone",
    )
    beta: float = Field(default=2.0, ge=1.0, description="β of eqs. 6 and 8")
    epsilon: float = Field(default=0.25, gt=0.0, description="ε of eqs. 5 and 8")
    alpha_init: float = Field(default=0.1, gt=0.0, description="α of eqs. 4 and 8 at step 0")
    alpha_max: float = Field(default=5.0, gt=0.0, description="upper limit of α")
    alpha_anneal_fraction: float = Field(
        default=0.25, gt=0.0, le=1.0,
        description="α reaches alpha_max after this fraction of the run's planned training samples (rows × epochs)")
    alpha_anneal_samples: int | None = Field(
        default=None, ge=1, description="a fixed schedule instead: α reaches alpha_max after this many training samples")
    r_min: float = Field(default=0.15, ge=0.0, lt=1.0, description="sparsity boundary of eq. 10, lower end")
    r_max: float = Field(default=0.25, gt=0.0, le=1.0, description="sparsity boundary of eq. 10, upper end")
    lambda_init: float = Field(default=0.01, ge=0.0, description="λ̂ of eq. 10 at step 0")
    lambda_growth: float = Field(default=4e-4, ge=0.0, description="λ̂ added per 1,000 training samples")
    lambda_max: float = Field(default=10.0, ge=0.0, description="cap of λ̂")
    sparsity_scope: Literal["batch", "domain"] = Field(
        default="batch",
        description="R_s (eq. 9) on r^l over the batch, or per domain of the batch (weighted by its rows)")
    regularize: bool | None = Field(
        default=None,
        description="apply R_s (eq. 9); default: yes for binarization and fusion, no for scaling",
    )
    prune_input: bool = Field(default=False, description="also prune the input layer [e_d, e_a]")

    @model_validator(mode="before")
    @classmethod
    def _replaced_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and "alpha_anneal_steps" in data:
            raise ValueError("alpha_anneal_steps was replaced: the schedules count training samples of all workers; "
                             "give alpha_anneal_fraction (of the run) or alpha_anneal_samples")
        return data

    @model_validator(mode="after")
    def _ranges(self) -> "PrunerConfig":
        if self.r_min >= self.r_max:
            raise ValueError(f"r_min ({self.r_min}) must be below r_max ({self.r_max})")
        if self.alpha_max < self.alpha_init:
            raise ValueError(f"alpha_max ({self.alpha_max}) must be at least alpha_init ({self.alpha_init})")
        if self.formulation == "scaling" and self.regularize:
            raise ValueError(
                "regularize: scaling has no threshold (eq. 7 prunes nothing), its sparsity is always 0 "
                "and R_s could not act; use binarization or fusion"
            )
        if self.formulation != "scaling" and self.epsilon >= (1.0 if self.formulation == "binarization" else self.beta):
            raise ValueError(
                f"epsilon ({self.epsilon}) must be below the factor's maximum "
                f"({1.0 if self.formulation == 'binarization' else self.beta}) or every neuron is pruned"
            )
        return self

    @property
    def r_target(self) -> float:
        """r = (r_min + r_max) / 2 of eq. 9."""
        return (self.r_min + self.r_max) / 2.0

    @property
    def regularized(self) -> bool:
        return self.regularize if self.regularize is not None else self.formulation != "scaling"


class StarConfig(StrictModel):
    """STAR (Sheng et al. 2021): star-topology FC layers, partitioned normalisation, auxiliary
    network (docs/competitors.md)."""

    aux_hidden_units: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [64], min_length=1, description="the auxiliary network's hidden layers (on e_d)")
    min_domain_rows: int = Field(
        default=10, ge=1, description="train rows a domain needs for its own parameters (the others share one row)")
    norm_momentum: float = Field(default=0.1, gt=0.0, le=1.0, description="momentum of PN's running statistics")


class ApgConfig(StrictModel):
    """APG (Yan et al. 2022) conditioned on the domain: W^l(e_d) = U^l S^l(e_d) V^l of rank K."""

    rank: int = Field(default=16, ge=1, description="K of the low-rank decomposition (capped at the layer's smaller width)")
    generator_hidden: int = Field(default=64, ge=1, description="hidden width of the MLP that generates S^l(e_d)")


class PepNetConfig(StrictModel):
    """PEPNet (Chang et al. 2023), one task: EPNet on the input embedding, PPNet on every layer."""

    gate_hidden: int = Field(default=64, ge=1, description="hidden width of every gate network")
    gate_scale: float = Field(default=2.0, gt=0.0, description="γ of the gates: δ = γ·σ(·)")
    persona_fields: list[str] = Field(
        default_factory=list, description="categorical fields whose embeddings join e_d in PPNet's prior (e.g. user_id)")


class MamlConfig(StrictModel):
    """MAML with domains as meta-tasks: the head (last hidden layer and logit layer) adapts to
    each domain by inner SGD steps (docs/competitors.md, "MAML")."""

    inner_steps: int = Field(default=1, ge=1, description="inner SGD steps of a domain's head on its support rows")
    inner_lr: float = Field(default=0.1, gt=0.0, description="the inner steps' learning rate η")
    first_order: bool = Field(default=True, description="first-order MAML (no second derivatives through the inner steps)")
    support_rows: int = Field(default=16, ge=1, description="train rows kept per domain to adapt its head at evaluation")
    min_domain_rows: int = Field(
        default=10, ge=1, description="train rows a domain needs for its own support buffer (the others use the meta head)")


MODEL_KINDS = ("plain", "adasparse", "star", "apg", "pepnet", "maml")


class ModelSpec(StrictModel):
    """A CTR model less its input features (which a dataset spec supplies): the family
    (``kind``), the backbone and every knob of its arches. ``kind: plain`` is the backbone
    alone (the baseline), ``kind: adasparse`` adds the domain-adaptive pruner; ``dnn``, the
    round-1 spelling of ``plain``, is still accepted."""

    kind: Literal["plain", "adasparse", "star", "apg", "pepnet", "maml"] = Field(
        default="adasparse",
        description="model family: plain (the backbone alone) | adasparse | the paper's competitors star | apg | pepnet | maml")
    backbone: Literal["dnn", "dcnv2"] = Field(default="dnn", description="the network the model is built on")
    hidden_units: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [128, 64, 32], min_length=1,
                                                           description="hidden layer sizes, e.g. 128,64,32")
    cross_layers: int = Field(default=3, ge=1, description="DCNv2 cross layers")
    logit_bias_init: Literal["uniform", "base_rate"] = Field(
        default="base_rate",
        description="the logit layer's bias at the start: nn.Linear's uniform init, or the log-odds of the train "
                    "split's click rate (docs/competitors.md says why)")
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    pruner: PrunerConfig = Field(default_factory=PrunerConfig)
    star: StarConfig = Field(default_factory=StarConfig)
    apg: ApgConfig = Field(default_factory=ApgConfig)
    pepnet: PepNetConfig = Field(default_factory=PepNetConfig)
    maml: MamlConfig = Field(default_factory=MamlConfig)

    @field_validator("kind", mode="before")
    @classmethod
    def _round1_name(cls, v: Any) -> Any:
        return "plain" if v == "dnn" else v

    @model_validator(mode="after")
    def _sharding_kind(self) -> "ModelSpec":
        if self.kind == "maml" and self.embedding.sharding != "replicated":
            raise ValueError("embedding.sharding: maml looks its support rows up in a second pass per step that not "
                             "every worker makes; sharded lookups need every worker at each one: keep it replicated")
        return self

    def with_features(self, features: "FeatureConfig") -> "ModelConfig":
        """The whole model config for a dataset's features."""
        return ModelConfig(**dict(self), features=features)


class ModelConfig(ModelSpec):
    """A whole CTR model: :class:`ModelSpec` plus what the data decides: the features it reads
    and, for models with per-domain rows (STAR's parameters, MAML's support rows), how many
    domains have their own row."""

    features: FeatureConfig
    domain_slots: int = Field(
        default=1, ge=1,
        description="rows of per-domain parameter tables: one per train domain with enough rows, plus one shared")

    @model_validator(mode="after")
    def _persona_fields_exist(self) -> "ModelConfig":
        names = {f.name for f in self.features.all_categorical}
        for name in self.pepnet.persona_fields:
            if name not in names:
                raise ValueError(f"pepnet.persona_fields: {name!r} is not a categorical field of the data")
        return self

    def spec(self) -> ModelSpec:
        return ModelSpec(**{k: v for k, v in self if k not in ("features", "domain_slots")})


class TrainConfig(StrictModel):
    """The training loop's own settings (:mod:`adasparse.loop`)."""

    epochs: int = Field(default=2, ge=1, description="passes over the train split; the best by dev GAUC is kept")
    batch_size: int = Field(default=256, ge=1, description="rows per step and worker")
    seed: int = Field(default=0, description="initialisation and shuffling")
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto", description="auto: bfloat16 autocast on GPU, float32 on CPU")


class OptimConfig(StrictModel):
    """Adam for dense parameters, sparse (lazy) Adam for the embedding rows, see :mod:`adasparse.optim`."""

    lr: float = Field(default=1e-3, gt=0.0, description="Adam's learning rate")
    embedding_lr: float | None = Field(default=None, gt=0.0, description="the tables' learning rate (default: lr)")
    betas: tuple[float, float] = Field(default=(0.9, 0.999), description="Adam's β1, β2")
    eps: float = Field(default=1e-8, gt=0.0, description="Adam's ε")
    sharded_tables: Literal["auto", "adam", "rowwise_adagrad"] = Field(
        default="auto",
        description="the fused optimiser of sharded tables (model.embedding.sharding): adam (GPU only), "
                    "rowwise_adagrad, auto (adam on GPUs, rowwise_adagrad on CPUs: FBGEMM's CPU kernels have no Adam)",
    )


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line: ``source: key.path: message`` for the first error (and a count of the rest)."""
    errors = err.errors()
    # an unknown key first: a misspelt key usually explains the "field required" beside it
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = ".".join(str(p) for p in first["loc"])  # empty for whole-object checks, whose message names the keys
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    more = len(errors) - 1
    return f"{source}: {loc + ': ' if loc else ''}{msg}" + (f" (and {more} more)" if more else "")


def validate(cls: type[StrictModel], data: Any, source: str = "config"):
    """Validate ``data`` into ``cls``; errors become a one-line :class:`ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def load_yaml(path: str | Path) -> Any:
    """Read a YAML file, with a one-line error naming the file when it cannot be parsed."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} invalid YAML: {getattr(err, 'problem', err)}") from None


def load_model_config(path: str | Path) -> ModelConfig:
    """Load a :class:`ModelConfig` from YAML (the mapping itself or under a top-level ``model:`` key)."""
    data = load_yaml(path)
    if isinstance(data, dict) and set(data) == {"model"}:
        data = data["model"]
    return validate(ModelConfig, data, str(path))
