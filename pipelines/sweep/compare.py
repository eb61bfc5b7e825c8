"""``adasparse compare``: the paper's Table 1 (models × backbones) and Table 2 (AdaSparse's three
formulations) on any dataset, with seeds and the paper's significance mark.

    adasparse compare --data DIR/spec.yaml --models plain,adasparse,star,apg,pepnet,maml --backbones dnn,dcnv2 \\
        --seeds 3 --epochs 2 --out comparisons
    adasparse compare --table 2 --data DIR/spec.yaml --seeds 3 --out comparisons

Every cell (model, backbone, seed) is one run of the training job — the same job, config,
data and exchange for every model — run as a grid sweep on Ray Tune (:mod:`pipelines.sweep.tune`):
cells run in parallel as the cluster's CPUs allow, and rerunning the command resumes the
unfinished ones. The training options (``--epochs``, ``--workers``, ``--config FILE``, ...) are
``adasparse train``'s and apply to every cell; ``--model-config KIND=FILE`` adds a model's tuned
options (a sweep's ``best.yaml``: its ``model`` and ``optim`` sections) to that model's cells.

Written to ``OUT/NAME/``: ``table.md``, ``table.csv``, ``table.json`` — per model and backbone,
the mean ± standard deviation over seeds of test LogLoss, AUC and GAUC — and the sweep's own
files (``results.csv``, ``trials/``). The best model of a backbone on a metric is marked ``*``
when a paired t-test over the seeds (same seeds, same data) against the second best gives
p < 0.05, as the paper marks its results.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import sys
from pathlib import Path

from adasparse.config import ConfigError, validate
from adasparse.host import write_text_atomic
from pipelines.train.job_config import JobConfig, deep_merge, load_config_file, nest
from pipelines.train.job_flags import given_options, job_parser
from pipelines.sweep.model_tuning import FORMULATIONS, family_name, kind_files, space_files, tune_families
from pipelines.sweep.tune_space import Domain, TuneSpace

METRICS = (("logloss", False), ("auc", True), ("gauc", True))  # (name, higher is better)


def compare_space(table: int, models: list[str], backbones: list[str], seeds: list[int]) -> TuneSpace:
    """The grid of cells: Table 1 is models × backbones × seeds, Table 2 the three formulations
    of AdaSparse on the DNN backbone × seeds."""
    if table == 2:
        return TuneSpace(name="table2", description="AdaSparse's formulations (the paper's Table 2)", search="grid",
                         scheduler=None, fixed={"model.kind": "adasparse", "model.backbone": "dnn"},
                         params={"model.pruner.formulation": Domain(grid=list(FORMULATIONS)), "train.seed": Domain(grid=seeds)})
    return TuneSpace(name="table1", description="models x backbones (the paper's Table 1)", search="grid", scheduler=None,
                     params={"model.kind": Domain(grid=models), "model.backbone": Domain(grid=backbones),
                             "train.seed": Domain(grid=seeds)})


def compare_cells(table: int, models: list[str], backbones: list[str], seeds: list[int],
                  options: dict[str, dict] | None = None) -> list[dict]:
    """The grid's cells, named by model, backbone and seed (``star-dnn-seed0``; Table 2:
    ``adasparse-fusion-seed0``). ``options`` {family: run options}: a family's tuned options
    (:func:`family_name`), for each of its cells."""
    options = options or {}
    cells = []
    if table == 2:
        for form in FORMULATIONS:
            for seed in seeds:
                cells.append({"name": f"adasparse-{form}-seed{seed}", "params": {"model.pruner.formulation": form, "train.seed": seed},
                              "extra": options.get(family_name(2, "adasparse", "dnn", form), {})})
        return cells
    for model in models:
        for backbone in backbones:
            for seed in seeds:
                cells.append({"name": f"{model}-{backbone}-seed{seed}",
                              "params": {"model.kind": model, "model.backbone": backbone, "train.seed": seed},
                              "extra": options.get(family_name(1, model, backbone), {})})
    return cells


def family_options(table: int, tuned: dict[str, dict], backbones: list[str]) -> dict[str, dict]:
    """``--model-config``'s options {model kind: options} → {family: options}: a model's on every
    backbone (Table 2: AdaSparse's on every formulation)."""
    if table == 2:
        return {family_name(2, "adasparse", "dnn", f): extra for kind, extra in tuned.items() for f in FORMULATIONS}
    return {family_name(1, kind, b): extra for kind, extra in tuned.items() for b in backbones}


def paired_p_value(a: list[float], b: list[float]) -> float | None:
    """Two-sided paired t-test of equal means (None with fewer than two pairs or no spread)."""
    if len(a) < 2:
        return None
    from scipy import stats

    diffs = [x - y for x, y in zip(a, b)]
    if all(math.isclose(d, diffs[0], rel_tol=1e-9, abs_tol=1e-12) for d in diffs):
        # the same difference in every seed (to rounding): t is infinite, or undefined at 0
        return 1.0 if math.isclose(diffs[0], 0.0, abs_tol=1e-12) else 0.0
    return float(stats.ttest_rel(a, b).pvalue)


def comparison_table(cells: list[dict], alpha: float = 0.05) -> list[dict]:
    """``cells``: one dict per finished run with ``model``, ``backbone``, ``seed`` and the test
    ``logloss``, ``auc``, ``gauc``. Returns one row per (model, backbone) with each metric's
    mean, std, the seeds, and ``best``/``p``/``significant`` for the best model of its backbone
    (paired over the seeds both models finished)."""
    groups: dict[tuple[str, str], dict[int, dict]] = {}
    for c in cells:
        groups.setdefault((c["model"], c["backbone"]), {})[int(c["seed"])] = c
    rows = []
    for (model, backbone), by_seed in groups.items():
        row = {"model": model, "backbone": backbone, "seeds": sorted(by_seed)}
        for m, _ in METRICS:
            vals = [by_seed[s][m] for s in row["seeds"]]
            row[m] = {"mean": statistics.mean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                      "values": vals, "best": False, "p": None, "significant": False}
        rows.append(row)
    for backbone in {r["backbone"] for r in rows}:
        mine = [r for r in rows if r["backbone"] == backbone]
        for m, higher in METRICS:
            ranked = sorted(mine, key=lambda r: r[m]["mean"], reverse=higher)
            ranked[0][m]["best"] = True
            if len(ranked) < 2:
                continue
            first, second = ranked[:2]
            common = sorted(set(first["seeds"]) & set(second["seeds"]))
            a = [first[m]["values"][first["seeds"].index(s)] for s in common]
            b = [second[m]["values"][second["seeds"].index(s)] for s in common]
            p = paired_p_value(a, b)
            first[m]["p"] = p
            first[m]["significant"] = p is not None and p < alpha
    order = {name: i for i, name in enumerate(dict.fromkeys(c["model"] for c in cells))}
    return sorted(rows, key=lambda r: (r["backbone"], order[r["model"]]))


def _cell(stat: dict) -> str:
    return f"{stat['mean']:.4f} ± {stat['std']:.4f}" + ("*" if stat["significant"] else "")


def write_tables(rows: list[dict], out: Path, title: str, tuning: str | None = None) -> None:
    """``table.md``, ``table.csv`` and ``table.json`` under ``out`` (``tuning``: the tuning
    budget's line, from ``tuning.md``)."""
    lines = [f"# {title}", "", "Test metrics, mean ± std over seeds; * : the best of its backbone, paired t-test over the "
             "seeds against the second best p < 0.05.", ""]
    if tuning:
        lines += [f"Tuned: {tuning} Winners: tuning.md.", ""]
    lines += ["| backbone | model | seeds | LogLoss | AUC | GAUC |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['backbone']} | {r['model']} | {len(r['seeds'])} | "
                     + " | ".join(("**" if r[m]["best"] else "") + _cell(r[m]) + ("**" if r[m]["best"] else "") for m, _ in METRICS)
                     + " |")
    write_text_atomic(out / "table.md", "\n".join(lines) + "\n")
    fields = ["backbone", "model", "seeds"] + [f"{m}_{k}" for m, _ in METRICS for k in ("mean", "std", "p", "significant")]
    with open(out / "table.csv.tmp", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({"backbone": r["backbone"], "model": r["model"], "seeds": len(r["seeds"]),
                        **{f"{m}_{k}": r[m][k] for m, _ in METRICS for k in ("mean", "std", "p", "significant")}})
    (out / "table.csv.tmp").replace(out / "table.csv")
    write_text_atomic(out / "table.json", json.dumps(rows, indent=2))


def cells_of(summary: dict, table: int, sweep_dir: Path) -> list[dict]:
    """The finished runs of the sweep as table cells (test metrics from each run's metrics.json)."""
    cells = []
    for t in summary["trials"]:
        saved = sweep_dir / "trials" / t["trial"] / "metrics.json"
        if not t["finished"] or not saved.exists():
            continue
        test = json.loads(saved.read_text())["test"]
        model = f"adasparse-{t['model.pruner.formulation']}" if table == 2 else str(t["model.kind"])
        backbone = "dnn" if table == 2 else str(t["model.backbone"])
        if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in (test["logloss"], test["auc"], test["gauc"])):
            continue
        cells.append({"model": model, "backbone": backbone, "seed": t["train.seed"],
                      "logloss": test["logloss"], "auc": test["auc"], "gauc": test["gauc"]})
    return cells


def tuned_options(kind: str, path: str) -> dict:
    """The hyperparameters of a tuned run config for ``kind``'s cells: its ``model`` section
    (less the family and backbone, which the grid sets) and its ``optim`` section."""
    cfg = load_config_file(path)
    model = dict(cfg.get("model") or {})
    if model.get("kind") not in (None, kind) and not (kind == "plain" and model.get("kind") == "dnn"):
        raise ConfigError(f"{path}: model.kind is {model.get('kind')!r}, not {kind!r}")
    model.pop("kind", None)
    model.pop("backbone", None)
    return {"model": model, **({"optim": cfg["optim"]} if cfg.get("optim") else {})}


def _job_base(args: dict, models: list[str], backbones: list[str], space: TuneSpace) -> JobConfig:
    """The options every cell shares (config file, then the flags), each cell's config checked."""
    opts = given_options(args)
    for key in ("model.kind", "model", "kind", "backbone", "model.backbone", "seed", "train.seed"):
        if key in opts:
            raise ConfigError(f"--{key}: set by the comparison's grid (use --models, --backbones, --seeds)")
    file = load_config_file(args["config"]) if args.get("config") else {}
    base = validate(JobConfig, deep_merge(deep_merge(file, nest(space.fixed, "compare")), nest(opts, "options")), "options")
    for model in models:  # every cell's config is valid before any runs
        for backbone in backbones:
            validate(JobConfig, deep_merge(base.model_dump(mode="json"), nest({"model.kind": model, "model.backbone": backbone},
                                                                               "--models/--backbones")), "--models/--backbones")
    if "://" not in base.data:
        base = base.model_copy(update={"data": str(Path(base.data).resolve())})
    if "://" in base.output.dir:
        raise ConfigError(f"--out {base.output.dir}: comparisons write to a local or shared directory")
    return base


def _given_tuned(args: dict, models: list[str], backbones: list[str], base: JobConfig) -> dict[str, dict]:
    """``--model-config``'s options {model kind: options}, each tuned cell's config checked."""
    tuned = {kind: tuned_options(kind, path) for kind, path in kind_files(args["model_config"], models, "--model-config")}
    if tuned and args["tune_trials"]:
        raise ConfigError("--model-config with --tune-trials: the comparison tunes every model itself; give one or the other")
    for model, extra in tuned.items():
        for backbone in backbones:
            validate(JobConfig, deep_merge(deep_merge(base.model_dump(mode="json"), extra),
                                           nest({"model.kind": model, "model.backbone": backbone}, "--model-config")),
                     f"--model-config {model}")
    return tuned


def compare(args: dict) -> None:
    """The command's work: (tune,) run every cell, write the tables."""
    from pipelines.sweep.tune import sweep

    if args["seeds"] < 1:
        raise ConfigError("--seeds must be at least 1")
    if args["tune_trials"] < 0:
        raise ConfigError("--tune-trials must be at least 1 (0: no tuning)")
    models = [m.strip() for m in args["models"].split(",") if m.strip()]
    backbones = [b.strip() for b in args["backbones"].split(",") if b.strip()]
    if len(set(models)) != len(models) or not models:
        raise ConfigError(f"--models {args['models']}: name each model once")
    space = compare_space(args["table"], models, backbones, list(range(args["seeds"])))
    base = _job_base(args, models, backbones, space)
    options = family_options(args["table"], _given_tuned(args, models, backbones, base), backbones)
    name = base.output.name or space.name
    sweep_dir = Path(base.output.dir).resolve() / name
    if args["tune_trials"]:
        paths = space_files(["adasparse"] if args["table"] == 2 else models, args["tune_space"])
        options = tune_families(args["table"], models, backbones, base, args["tune_trials"], paths, sweep_dir)
    cells = compare_cells(args["table"], models, backbones, list(range(args["seeds"])), options)
    summary = sweep(space, base, 1, base.output.dir, name, cells=cells)
    finished = cells_of(summary, args["table"], sweep_dir)
    if not finished:
        raise RuntimeError(f"no run of {sweep_dir} finished; see {sweep_dir}/trials for their logs")
    title = "AdaSparse's formulations (Table 2)" if args["table"] == 2 else "Models and backbones (Table 1)"
    tuning = (sweep_dir / "tuning.md").read_text().splitlines()[2] if args["tune_trials"] else None
    write_tables(comparison_table(finished), sweep_dir, title, tuning)
    print((sweep_dir / "table.md").read_text())
    print(f"tables: {sweep_dir / 'table.md'}, table.csv, table.json")


def main(argv: list[str] | None = None) -> int:
    from pipelines.runtime.exit_status import run_command

    p = job_parser("adasparse compare", "the paper's Table 1 or 2 on a dataset: every model, backbone and seed on the same job")
    p.add_argument("--models", default="plain,adasparse,star,apg,pepnet,maml", help="Table 1's models (model.kind values)")
    p.add_argument("--backbones", default="dnn,dcnv2", help="Table 1's backbones")
    p.add_argument("--seeds", type=int, default=3, help="seeds per cell (0, 1, ...): the paired test needs at least 2")
    p.add_argument("--table", type=int, choices=[1, 2], default=1, help="1: models x backbones; 2: AdaSparse's formulations")
    p.add_argument("--tune-trials", type=int, default=0, metavar="N",
                   help="first tune every model (Table 2: every formulation) with its own space, N trials each under the same "
                        "budget (Optuna TPE + ASHA on dev GAUC), then run the seeds with each one's winner (tuning.md)")
    p.add_argument("--tune-space", action="append", default=[], metavar="KIND=FILE",
                   help="the space a model is tuned with (default: its file in tune_spaces/; repeatable)")
    p.add_argument("--model-config", action="append", default=[], metavar="KIND=FILE",
                   help="a model's tuned options (a run config, e.g. a sweep's best.yaml): its model and optim sections "
                        "apply to that model's cells (repeatable)")
    args = vars(p.parse_args(argv))

    return run_command("adasparse compare", lambda: compare(args))


if __name__ == "__main__":
    sys.exit(main())
