"""Search spaces for ``adasparse tune``: YAML files in ``tune_spaces/`` validated into a typed object.

    name: paper-adasparse
    search: optuna                    # optuna (model-based, default) | random | grid
    scheduler: {grace_period: 1, reduction_factor: 2}   # ASHA on dev GAUC per epoch; null: none
    fixed: {model: adasparse}         # run options (adasparse train keys) shared by every trial
    params:                           # one domain per key: uniform | loguniform | choice | grid
      beta: {uniform: [1.0, 4.0]}
      epsilon: {loguniform: [0.05, 0.5]}
      sparsity_boundary: {choice: [[0.05, 0.15], [0.15, 0.25], [0.25, 0.35]]}

A parameter is any training option that shapes the model or its optimisation (the keys of
:class:`pipelines.train.RunSpec` except data, output, cluster and fault-injection keys), plus
``sparsity_boundary``: pairs [r_min, r_max] with 0 ≤ r_min < r_max ≤ 0.5 (the paper's range,
§4.3.3). Every end of a range and every choice is checked against the option's own rules
(β ≥ 1, ε > 0, lr > 0, ...), so a bad space fails before any trial starts, in one line that
names the file and the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from adasparse.config import ConfigError, StrictModel, format_validation_error, load_yaml, validate
from pipelines.train import RunSpec

# options that are not hyperparameters: where data and results live, the cluster, tests
NOT_TUNABLE = frozenset({"data", "out", "storage_endpoint", "name", "address", "workers", "cpus_per_worker", "gpu", "epochs", "max_failures",
                         "fail_at_epoch", "seed", "r_min", "r_max"})
TUNABLE = frozenset(RunSpec.model_fields) - NOT_TUNABLE | {"sparsity_boundary"}
BOUNDARY_MAX = 0.5


class Domain(StrictModel):
    """Exactly one of the four kinds."""

    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    choice: list[Any] | None = Field(default=None, min_length=1)
    grid: list[Any] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_kind(self) -> "Domain":
        kinds = [k for k in ("uniform", "loguniform", "choice", "grid") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"give exactly one of uniform, loguniform, choice, grid (got {', '.join(kinds) or 'none'})")
        for k in ("uniform", "loguniform"):
            rng = getattr(self, k)
            if rng is not None and not rng[0] < rng[1]:
                raise ValueError(f"{k} range [{rng[0]}, {rng[1]}] must have low < high")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError("loguniform range must be positive")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("uniform", "loguniform", "choice", "grid") if getattr(self, k) is not None)

    @property
    def values(self) -> list[Any]:
        """The values to check: range ends or every choice."""
        return list(getattr(self, self.kind))


class Scheduler(StrictModel):
    """ASHA (asynchronous successive halving) on dev GAUC, time measured in epochs."""

    grace_period: int = Field(default=1, ge=1, description="epochs every trial runs before it can be stopped")
    reduction_factor: float = Field(default=2.0, gt=1.0)


class TuneSpace(StrictModel):
    name: str
    description: str = ""
    search: Literal["optuna", "random", "grid"] = "optuna"
    scheduler: Scheduler | None = Field(default_factory=Scheduler)
    fixed: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Domain] = Field(min_length=1)

    @model_validator(mode="after")
    def _search_matches_domains(self) -> "TuneSpace":
        grids = [k for k, d in self.params.items() if d.kind == "grid"]
        if self.search == "grid" and len(grids) != len(self.params):
            other = next(k for k in self.params if k not in grids)
            raise ValueError(f"search: grid needs every parameter as a grid (params.{other} is not)")
        if self.search != "grid" and grids:
            raise ValueError(f"params.{grids[0]}: grid values need search: grid ({self.search} samples instead; use choice)")
        return self

    def grid_size(self) -> int:
        n = 1
        for d in self.params.values():
            n *= len(d.values) if d.kind == "grid" else 1
        return n


def boundary_label(pair) -> str:
    """A sparsity boundary as one categorical value (Optuna's choices must be scalars)."""
    return f"{float(pair[0]):g}-{float(pair[1]):g}"


def parse_boundary(value) -> tuple[float, float]:
    lo, hi = (value.split("-") if isinstance(value, str) else value)
    return float(lo), float(hi)


def _check_boundary(pair, where: str, source: str) -> None:
    ok = isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(v, (int, float)) for v in pair)
    if not ok:
        raise ConfigError(f"{source}: {where}: a sparsity boundary is a pair [r_min, r_max], got {pair!r}")
    lo, hi = float(pair[0]), float(pair[1])
    if not 0.0 <= lo < hi <= BOUNDARY_MAX:
        raise ConfigError(f"{source}: {where}: sparsity boundary [{lo:g}, {hi:g}] needs 0 <= r_min < r_max <= {BOUNDARY_MAX}")


def _check_value(key: str, value, where: str, source: str) -> None:
    """Validate one candidate value the way ``adasparse train`` would."""
    try:
        RunSpec.model_validate({"data": "-", key: value})
    except ValidationError as err:
        detail = format_validation_error(err, "").removeprefix(": ").removeprefix(f"{key}: ")
        raise ConfigError(f"{source}: {where}: {value!r}: {detail}") from None


def check_space(space: TuneSpace, source: str) -> TuneSpace:
    for key in space.fixed:
        if key not in RunSpec.model_fields or key in {"data", "out", "storage_endpoint", "name", "address", "fail_at_epoch"}:
            raise ConfigError(f"{source}: fixed.{key}: not a run option that a space may fix")
    try:
        RunSpec.model_validate({"data": "-", **space.fixed})
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, f"{source}: fixed")) from None
    for key, dom in space.params.items():
        if key not in TUNABLE:
            hint = " (tune the pair as sparsity_boundary)" if key in ("r_min", "r_max") else ""
            raise ConfigError(f"{source}: params.{key}: unknown or untunable parameter{hint}")
        if key in space.fixed:
            raise ConfigError(f"{source}: params.{key}: also given in fixed")
        if key == "sparsity_boundary" and dom.kind in ("uniform", "loguniform"):
            raise ConfigError(f"{source}: params.sparsity_boundary: give pairs as choice or grid")
        for i, value in enumerate(dom.values):
            where = f"params.{key}.{dom.kind}[{i}]"
            if key == "sparsity_boundary":
                _check_boundary(value, where, source)
            else:
                _check_value(key, value, where, source)
    return space


def load_space(path: str | Path) -> TuneSpace:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{path}: no such search space file")
    return check_space(validate(TuneSpace, load_yaml(p), str(path)), str(path))


def trial_options(config: dict) -> dict:
    """A trial's sampled parameters → run options (``sparsity_boundary`` → r_min, r_max)."""
    opts = {}
    for key, value in config.items():
        if key == "sparsity_boundary":
            opts["r_min"], opts["r_max"] = parse_boundary(value)
        else:
            opts[key] = value
    return opts


__all__ = ["TuneSpace", "load_space", "trial_options", "boundary_label", "parse_boundary", "TUNABLE"]
