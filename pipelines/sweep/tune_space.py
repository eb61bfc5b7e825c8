"""Search spaces for ``adasparse tune``: YAML files in ``tune_spaces/`` validated into a typed object.

    name: paper-adasparse
    search: optuna                    # optuna (model-based, default) | random | grid
    scheduler: {grace_period: 1, reduction_factor: 2}   # ASHA on dev GAUC per epoch; null: none
    fixed: {model.kind: adasparse}    # run options (adasparse train keys) shared by every trial
    params:                           # one domain per key: uniform | loguniform | choice | grid
      model.pruner.beta: {uniform: [1.0, 4.0]}
      model.pruner.epsilon: {loguniform: [0.05, 0.5]}
      sparsity_boundary: {choice: [[0.05, 0.15], [0.15, 0.25], [0.25, 0.35]]}

Keys are the training job's (:mod:`pipelines.train.job_config`), in any of its spellings
(``model.pruner.beta``, ``pruner.beta``, the round-1 ``beta``). A parameter is any option that
shapes the model or its optimisation (:data:`TUNABLE`: ``model.*``, ``optim.*``,
``train.batch_size``, ``train.precision``, ``ingest.shuffle_buffer``), plus
``sparsity_boundary``: pairs [r_min, r_max] with 0 ≤ r_min < r_max ≤ 0.5 (the paper's range,
§4.3.3), mapped onto ``model.pruner.r_min``/``r_max`` by :func:`trial_options` alone. Every end
of a range and every choice is checked against the option's own rules (β ≥ 1, ε > 0, lr > 0,
...), so a bad space fails before any trial starts, in one line that names the file and the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from adasparse.config import ConfigError, StrictModel, load_yaml, validate
from pipelines.train.job_config import job_config, resolve_key
from pipelines.train.job_flags import config_leaves

BOUNDARY = "sparsity_boundary"
BOUNDARY_PATHS = (("model", "pruner", "r_min"), ("model", "pruner", "r_max"))
# hyperparameters: what shapes the model or its optimisation; not where data and results
# live, the cluster, the epochs (the scheduler's time axis), the seed, or the fault injection
TUNABLE = frozenset(
    path for path, _ in config_leaves()
    if (path[0] in ("model", "optim")
        or path in (("train", "batch_size"), ("train", "precision"), ("ingest", "shuffle_buffer"), ("ingest", "domain_fields")))
    and path not in BOUNDARY_PATHS
)
# options a space may not fix: they belong to the command that runs the sweep
NOT_FIXABLE = frozenset({("data",), ("output", "dir"), ("output", "name"), ("output", "storage_endpoint"), ("resources", "address"),
                         ("faults", "fail_at_epoch")})
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
        job_config({"data": "-", key: value})
    except ConfigError as err:
        detail = str(err).removeprefix("options: ")
        detail = detail.removeprefix(".".join(resolve_key(key)) + ": ")
        raise ConfigError(f"{source}: {where}: {value!r}: {detail}") from None


def check_space(space: TuneSpace, source: str) -> TuneSpace:
    fixed_paths = {}
    for key in space.fixed:
        path = resolve_key(key)
        if path in NOT_FIXABLE or not any(p[: len(path)] == path for p, _ in config_leaves()):
            raise ConfigError(f"{source}: fixed.{key}: not a run option that a space may fix")
        fixed_paths[path] = key
    job_config({"data": "-", **space.fixed}, source=f"{source}: fixed")
    seen: dict[tuple[str, ...], str] = {}
    for key, dom in space.params.items():
        path = (BOUNDARY,) if key == BOUNDARY else resolve_key(key)
        if path != (BOUNDARY,) and path not in TUNABLE:
            hint = " (tune the pair as sparsity_boundary)" if path in BOUNDARY_PATHS else ""
            raise ConfigError(f"{source}: params.{key}: unknown or untunable parameter{hint}")
        if path in fixed_paths or (path == (BOUNDARY,) and set(BOUNDARY_PATHS) & set(fixed_paths)):
            raise ConfigError(f"{source}: params.{key}: also given in fixed")
        if path in seen:
            raise ConfigError(f"{source}: params.{key}: the same option as params.{seen[path]}")
        seen[path] = key
        if key == BOUNDARY and dom.kind in ("uniform", "loguniform"):
            raise ConfigError(f"{source}: params.sparsity_boundary: give pairs as choice or grid")
        if path == ("ingest", "domain_fields") and space.search == "optuna":
            raise ConfigError(f"{source}: params.{key}: lists of fields need search: grid or random (Optuna's choices are scalars)")
        for i, value in enumerate(dom.values):
            where = f"params.{key}.{dom.kind}[{i}]"
            if key == BOUNDARY:
                _check_boundary(value, where, source)
            else:
                _check_value(key, value, where, source)
    return space


def searched_paths(space: TuneSpace) -> set[tuple[str, ...]]:
    """The option paths a space's parameters set (the boundary: r_min and r_max)."""
    out: set[tuple[str, ...]] = set()
    for key in space.params:
        out |= set(BOUNDARY_PATHS) if key == BOUNDARY else {resolve_key(key)}
    return out


def load_space(path: str | Path) -> TuneSpace:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{path}: no such search space file")
    return check_space(validate(TuneSpace, load_yaml(p), str(path)), str(path))


def trial_options(config: dict) -> dict:
    """A trial's sampled parameters → run options; the one place where ``sparsity_boundary``
    becomes ``model.pruner.r_min`` and ``model.pruner.r_max``."""
    opts = {}
    for key, value in config.items():
        if key == BOUNDARY:
            lo, hi = parse_boundary(value)
            opts[".".join(BOUNDARY_PATHS[0])], opts[".".join(BOUNDARY_PATHS[1])] = lo, hi
        else:
            opts[key] = value
    return opts


__all__ = ["BOUNDARY", "TUNABLE", "TuneSpace", "boundary_label", "load_space", "parse_boundary", "searched_paths", "trial_options"]
