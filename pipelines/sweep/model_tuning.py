"""``adasparse compare --tune-trials N``: every model tuned with its own shipped space under the
same budget before its seeds run — the paper tuned every competitor; a comparison of one tuned
model against untuned ones says little.

The budget is the same for every model: N trials, the comparison's epochs and data, Optuna's
TPE with ASHA on dev GAUC (:data:`TUNING_SEARCH`, :data:`TUNING_SCHEDULER`, whatever a space
file says), each model's own space (:data:`MODEL_SPACES`; the knobs all models share — learning
rates and embedding init σ — over the same ranges, tested). A family is what shares one winner:
a model on one backbone (Table 1) or one formulation of AdaSparse (Table 2); a parameter the
family fixes (the formulation) leaves its space. Each family's sweep lives in
``OUT/NAME/tuning/<family>/`` and resumes like any sweep; ``tuning.json`` and ``tuning.md``
beside the table hold the budget and the winners.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from adasparse.config import ConfigError, validate
from adasparse.host import write_text_atomic
from pipelines.sweep.tune_space import Scheduler, TuneSpace, load_space, trial_options
from pipelines.train.job_config import JobConfig, deep_merge, nest, resolve_key

SPACES_DIR = Path(__file__).resolve().parents[2] / "tune_spaces"
MODEL_SPACES = {"plain": "plain.yaml", "adasparse": "paper_adasparse.yaml", "star": "star.yaml", "apg": "apg.yaml",
                "pepnet": "pepnet.yaml", "maml": "maml.yaml"}
FORMULATIONS = ("binarization", "scaling", "fusion")  # AdaSparse's three (the paper's Table 2)
TUNING_SEARCH = "optuna"
TUNING_SCHEDULER = Scheduler(grace_period=1, reduction_factor=2)


def kind_files(items: list[str], models: list[str], flag: str) -> list[tuple[str, str]]:
    """``KIND=FILE`` options (``--tune-space``, ``--model-config``) as (kind, file) pairs."""
    out = []
    for item in items:
        kind, sep, path = item.partition("=")
        if not sep or not path:
            raise ConfigError(f"{flag} {item}: expected KIND=FILE")
        if kind not in models:
            raise ConfigError(f"{flag} {item}: {kind!r} is not one of the compared models ({', '.join(models)})")
        out.append((kind, path))
    return out


def space_files(models: list[str], given: list[str]) -> dict[str, str]:
    """Each model's space file: the shipped one, or ``--tune-space KIND=FILE``."""
    return {**{m: str(SPACES_DIR / MODEL_SPACES[m]) for m in models}, **dict(kind_files(given, models, "--tune-space"))}


def family_space(path: str, kind: str, fixed: dict) -> TuneSpace:
    """A model's space for one family: the comparison's search and scheduler, the family's
    options fixed (and no longer searched)."""
    space = load_space(path)
    own_kind = next((v for k, v in space.fixed.items() if resolve_key(k) == ("model", "kind")), kind)
    if own_kind != kind:
        raise ConfigError(f"{path}: a space for model.kind {own_kind!r}, not {kind!r}")
    taken = {resolve_key(k) for k in fixed}
    params = {k: d for k, d in space.params.items() if resolve_key(k) not in taken}
    if not params:
        raise ConfigError(f"{path}: nothing left to search once {', '.join(fixed)} are fixed")
    return space.model_copy(update={"search": TUNING_SEARCH, "scheduler": TUNING_SCHEDULER, "params": params,
                                    "fixed": {**{k: v for k, v in space.fixed.items() if resolve_key(k) not in taken}, **fixed}})


def family_name(table: int, model: str, backbone: str, formulation: str | None = None) -> str:
    """The cells that share tuned options: a model on a backbone (Table 2: a formulation)."""
    return f"adasparse-{formulation}" if table == 2 else f"{model}-{backbone}"


def families(table: int, models: list[str], backbones: list[str]) -> list[tuple[str, str, dict]]:
    """(family name, model kind, the options the family fixes)."""
    if table == 2:
        return [(family_name(2, "adasparse", "dnn", f), "adasparse",
                 {"model.kind": "adasparse", "model.backbone": "dnn", "model.pruner.formulation": f}) for f in FORMULATIONS]
    return [(family_name(1, m, b), m, {"model.kind": m, "model.backbone": b}) for m in models for b in backbones]


def tune_families(table: int, models: list[str], backbones: list[str], base: JobConfig, trials: int, space_paths: dict[str, str],
                  out_dir: Path, log=print) -> dict[str, dict]:
    """Tune every family (each resumes where an earlier run stopped); returns {family: the
    winner's run options} and writes ``tuning.json`` and ``tuning.md`` in ``out_dir``."""
    from pipelines.sweep.tune import sweep

    plan = [(name, kind, family_space(space_paths[kind], kind, fixed), fixed) for name, kind, fixed in families(table, models, backbones)]
    record_path = out_dir / "tuning.json"
    before = json.loads(record_path.read_text()) if record_path.exists() else {}
    spent = {f["family"]: f.get("wall_s", 0.0) for f in before.get("families", [])}
    winners, rows = {}, []
    for name, kind, space, _ in plan:
        log(f"tuning {name}: {trials} trials of {space_paths[kind]}")
        t0 = time.perf_counter()
        fam_base = validate(JobConfig, deep_merge(base.model_dump(mode="json"), nest(space.fixed, space_paths[kind])), f"tuning {name}")
        summary = sweep(space, fam_base, trials, str(out_dir / "tuning"), name, log=log)
        wall = spent.get(name, 0.0) + time.perf_counter() - t0
        winners[name] = nest(trial_options(summary["params"]), f"tuning {name}")
        finished = sum(1 for t in summary["trials"] if t["finished"])
        rows.append({"family": name, "model": kind, "space": space_paths[kind], "searched": list(space.params),
                     "trials": len(summary["trials"]), "finished": finished, "best_trial": summary["best_trial"],
                     "best_dev_gauc": summary["best_dev_gauc"], "params": summary["params"], "wall_s": round(wall, 1)})
    record = {"trials": trials, "epochs": base.train.epochs, "search": TUNING_SEARCH,
              "scheduler": {"asha": TUNING_SCHEDULER.model_dump()}, "metric": "dev GAUC (best epoch)",
              "seed": base.train.seed, "families": rows}
    write_text_atomic(record_path, json.dumps(record, indent=2, default=str))
    write_text_atomic(out_dir / "tuning.md", tuning_markdown(record))
    return winners


def tuning_markdown(record: dict) -> str:
    lines = ["# Tuning budget and winners", "",
             f"Every family: {record['trials']} trials of its model's own space, {record['epochs']} epochs each, "
             f"{record['search']} (TPE) with ASHA (grace {record['scheduler']['asha']['grace_period']} epoch, "
             f"reduction factor {record['scheduler']['asha']['reduction_factor']:g}) on dev GAUC, seed {record['seed']}. "
             "The winner's options apply to every seed of its family.", "",
             "| family | space | trials (finished) | best dev GAUC | tuning wall s | winner |", "| --- | --- | --- | --- | --- | --- |"]
    for f in record["families"]:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in f["params"].items())
        lines.append(f"| {f['family']} | {Path(f['space']).name} | {f['trials']} ({f['finished']}) | {f['best_dev_gauc']:.4f} | "
                     f"{f['wall_s']:.0f} | {params} |")
    return "\n".join(lines) + "\n"
