"""``adasparse tune``: Ray Tune sweeps of the training job against dev GAUC.

    adasparse tune --space tune_spaces/paper_adasparse.yaml --trials 16 --data DIR/spec.yaml --epochs 3 --out sweeps

The options are ``adasparse train``'s (:mod:`pipelines.train.job_flags`), shared by every trial;
the space's parameters vary on top of them. Every trial is the training job itself
(:func:`pipelines.train.driver.run`) in a Tune function trial: a one-worker run trains in the
trial's own process, which reserves the worker's CPUs (no Ray Train controller and worker to
start per trial: docs/scale.md, "Fixed costs") and reports to Tune itself; a run of more
workers (or with ``faults.max_failures``) builds the ``TorchTrainer`` from a 0.01-CPU trial with
``TuneReportCallback`` (the Ray Train V2 pattern). Either way each epoch's dev LogLoss/AUC/GAUC
reaches Tune. The metric is dev GAUC; ASHA stops weak
trials at epoch milestones (``scheduler`` in the space); the search is Optuna's TPE by
default (``search: optuna``), or random sampling, or a full grid. Trials run side by side as
far as the cluster allows: each needs ``workers`` CPUs for its workers plus one for Ray Data
(GPU runs: ``workers`` GPUs), and on 2 CPUs one trial runs at a time with fractional workers.

Output under ``OUT/NAME`` (NAME defaults to the space's name): ``results.csv`` and the table
on stdout (trial, parameters, best dev GAUC, epochs run, test GAUC of finished trials),
``best.yaml`` (a run config: ``adasparse train --config best.yaml`` trains the winner as is),
``best.json`` (its parameters, dev and test metrics), ``trials/<trial>/metrics.json`` for each
trial, and ``sparsity_boundary.png`` (dev GAUC against boundary, as Fig. 3(d)) when the space
searches the boundary. Rerunning the same command resumes an interrupted sweep from its files
(:mod:`pipelines.sweep.trial_records`) with a fresh Tuner that keeps the concurrency: done trials
are kept, interrupted ones continue from their last checkpoint (same parameters, same run
directory), and only the missing draws are new (Optuna is told the finished ones first).
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from ray.tune import Callback

from adasparse.config import ConfigError, validate
from adasparse.host import write_text_atomic
from pipelines.train.job_config import JobConfig, deep_merge, dump_config, load_config_file, nest, resolve_key
from pipelines.train.job_flags import given_options, job_parser
from pipelines.runtime.leaked_groups import freeing_leaked_groups, remove_group
from pipelines.train.driver import cpus_per_worker, run, trainer_kind
from pipelines.sweep.trial_records import CELL, NamedTrials, TrialLog, TrialRecord, cell_name, identify, read_trials, write_start
from pipelines.sweep.tune_space import BOUNDARY, TuneSpace, boundary_label, load_space, parse_boundary, searched_paths, trial_options

METRIC = "dev_gauc"
TRIAL_CPU = 0.01  # the Tune function that drives one training run (Ray refuses 0)


def concurrency(cluster: dict, workers: int, gpu: bool) -> tuple[int, float]:
    """(trials at a time, CPUs each trial's training run may use): workers + 1 CPU for ingest
    per trial. The trial's own function holds TRIAL_CPU of its share: the training run must
    not count it, or its workers take the CPU that Ray Data's read tasks need and ingest
    starves (a whole CPU must stay free for a read task to start)."""
    cpus = cluster.get("CPU", 1.0)
    if gpu:
        n = max(1, int(cluster.get("GPU", 0) // workers))
    else:
        n = max(1, int(cpus // (workers + 1)))
    return n, round(cpus / n - TRIAL_CPU, 6)


def _param_space(space: TuneSpace) -> dict:
    from ray import tune

    out = {}
    for key, dom in space.params.items():
        values = dom.values
        if key == BOUNDARY:
            values = [boundary_label(v) for v in values]
        out[key] = {
            "uniform": lambda v: tune.uniform(*v),
            "loguniform": lambda v: tune.loguniform(*v),
            "choice": tune.choice,
            "grid": tune.grid_search,
        }[dom.kind](values)
    return out


def _trial(config: dict, base: dict, trials_dir: str, cpu_budget: float) -> None:
    """One Tune trial: the training job with this trial's parameters (and a grid cell's extra
    options, e.g. ``adasparse compare``'s tuned options of its model), reporting to Tune — from
    this process when the run trains here (one worker: :func:`pipelines.train.driver.trainer_kind`),
    else through Ray Train's controller."""
    from ray import tune

    name, params, extra = identify(config)
    write_start(Path(trials_dir), name, params, extra)
    if extra:
        base = deep_merge(base, extra)
    own = {**trial_options(params), "output.dir": trials_dir, "output.name": name, "resources.address": None}
    job = validate(JobConfig, deep_merge(base, nest(own, "trial")), f"trial {name}")
    log = lambda s: print(s, flush=True)  # noqa: E731
    if trainer_kind(job, in_trial=True) == "in_process":  # the sweep resolved auto for its data (trial_base)
        # Tune reuses the process for the next trial: a later trial's timeline starts with it
        started = None if not _TRIALS_RUN else time.time()
        _TRIALS_RUN.append(name)
        run(job, log=log, in_trial=True, on_report=tune.report, started_at=started)
        return
    from ray.tune.integration.ray_train import TuneReportCallback

    run(job, log=log, callbacks=[TuneReportCallback()], cpu_budget=cpu_budget, in_trial=True)


def trial_base(base: JobConfig, source) -> JobConfig:
    """The trials' options with ``resources.trainer`` resolved once for the sweep's data
    (:func:`pipelines.train.driver.trainer_kind`), so that every trial, its resources and the
    reuse of its process agree (``best.yaml`` keeps the user's own value)."""
    from pipelines.data.inline_read import reads_inline

    kind = trainer_kind(base, in_trial=True, small=reads_inline(source))
    return base.model_copy(update={"resources": base.resources.model_copy(update={"trainer": kind})})


_TRIALS_RUN: list[str] = []  # the trials this process ran (a process Tune reuses runs several)


def trial_resources(base: JobConfig, cpu_budget: float) -> dict:
    """What each trial's own process reserves (``base``: :func:`trial_base`'s): the worker's CPUs
    (and GPU) when the trial trains in it, else :data:`TRIAL_CPU` (its Ray Train workers reserve theirs)."""
    if base.resources.trainer != "in_process":
        return {"CPU": TRIAL_CPU}
    return {"CPU": cpus_per_worker(base, cpu_budget), **({"GPU": 1} if base.resources.gpu else {})}


class FreeStoppedRunsCallback(Callback):
    """Tune callback: when a trial ends (ASHA stopped it, or it failed), remove its training
    run's placement group if it is still there.

    A stopped trial's actor dies with its Ray Train controller, but the workers' placement
    group belongs to the sweep's job and outlives them; Ray Train's own cleaner removes it
    only once the State API says the controller died, which on a small cluster came late or
    never (the next trial then waited for those CPUs forever). The training job reports its
    placement group id with every epoch, so the driver knows which one to free."""

    def __init__(self):
        self.groups: dict[str, str] = {}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("placement_group"):
            self.groups[trial.trial_id] = result["placement_group"]

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._free(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._free(trial)

    def _free(self, trial) -> None:
        hex_id = self.groups.pop(trial.trial_id, None)
        if hex_id:
            remove_group(hex_id)


def _searcher(space: TuneSpace, seed: int, param_space: dict, done: list[TrialRecord], again: list[TrialRecord],
              taken: set[str]) -> NamedTrials:
    """The search of a sampled sweep: Optuna's TPE (``search: optuna``) or its random sampler
    (``random``), told every trial already done (its per-epoch dev GAUC and its last, as Tune
    tells a trial that ends), seeded with ``seed`` (a rerun's differs, so the new draws do not
    repeat the first ones), inside :class:`NamedTrials`, which hands out the trials to continue
    first and names every draw. A Searcher: Tune applies ``max_concurrent_trials`` to it (to a
    variant generator given as ``search_alg`` it does not)."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    sampler = optuna.samplers.TPESampler(seed=seed) if space.search == "optuna" else optuna.samplers.RandomSampler(seed=seed)
    inner = OptunaSearch(space=OptunaSearch.convert_search_space(param_space), metric=METRIC, mode="max", sampler=sampler)
    for r in done:
        if not math.isnan(r.last_dev_gauc):
            inner.add_evaluated_point(r.params, r.last_dev_gauc, intermediate_values=[r.dev_gauc[e] for e in sorted(r.dev_gauc)])
    return NamedTrials(inner, again, taken, METRIC)


def grid_cells(space: TuneSpace, repeats: int, seed: int) -> list[dict]:
    """Every cell of a grid space, named by its values; ``repeats`` > 1: the grid again with
    ``train.seed`` + 1, + 2, ... (names ending ``-r1``, ``-r2``, ...)."""
    keys = list(space.params)
    if repeats > 1 and any(resolve_key(k) == ("train", "seed") for k in keys):
        raise ConfigError("--trials: a grid over train.seed is not repeated (give more seeds instead)")
    cells = []
    for k in range(repeats):
        for combo in itertools.product(*(space.params[key].grid for key in keys)):
            params = {key: boundary_label(v) if key == BOUNDARY else v for key, v in zip(keys, combo)}
            cells.append({"name": cell_name(params) + (f"-r{k}" if k else ""), "params": params,
                          "extra": {"train": {"seed": seed + k}} if k else {}})
    return cells


def _scheduler(space: TuneSpace, epochs: int):
    if space.scheduler is None:
        return None
    from ray.tune.schedulers import ASHAScheduler

    # max_t above the last epoch: a trial that reaches its end finishes (test evaluation) instead of being stopped
    return ASHAScheduler(time_attr="epoch", max_t=epochs + 1, grace_period=space.scheduler.grace_period,
                         reduction_factor=space.scheduler.reduction_factor)


def sweep(space: TuneSpace, base: JobConfig, trials: int | None, out: str, name: str, log=print,
          cells: list[dict] | None = None) -> dict:
    """Run the sweep, or what is left of it: a grid's cells not yet done (``cells``: the grid
    as the caller names it, ``adasparse compare``'s; default :func:`grid_cells`), or a sampled
    sweep's interrupted trials and the draws still missing. Returns the summary (:func:`summarise`)."""
    import ray

    from pipelines.runtime.output_location import OutputLocation
    from pipelines.runtime.ray_env import init_ray
    from pipelines.data.sources import open_source
    from pipelines.data.spec import load_spec

    # what can be known before Ray starts: the data (spec, files, schemas) and the sweep's output
    data = load_spec(base.data)
    if base.ingest.domain_fields is not None:
        data = data.with_domain_fields(base.ingest.domain_fields, "ingest.domain_fields")
    source = open_source(data)
    OutputLocation.of(out).check_writable()
    if not base.output.dir.startswith("s3://"):
        OutputLocation.of(base.output.dir, base.output.storage_endpoint).check_writable()
    sweep_dir = Path(out).resolve() / name
    trials_dir = sweep_dir / "trials"
    records = read_trials(trials_dir)
    if (sweep_dir / "tuner.pkl").exists() and not records:
        raise ConfigError(f"{sweep_dir}: a sweep of an earlier version (Tune's own state in tuner.pkl), which this one "
                          "does not resume: start a new sweep (another --name)")
    samples = trials or (1 if space.search == "grid" else 8)
    if space.search == "grid":
        cells = cells if cells is not None else grid_cells(space, samples, base.train.seed)
        plan = SweepPlan(todo=[c for c in cells if not (c["name"] in records and records[c["name"]].done)], total=len(cells))
    else:
        plan = SweepPlan(done=[r for r in records.values() if r.done], again=[r for r in records.values() if not r.done])
        plan.draws = max(0, samples - len(plan.done) - len(plan.again))
        plan.total = len(plan.done) + len(plan.again) + plan.draws
    init_ray(base.resources.address)
    n_parallel, cpu_budget = concurrency(ray.cluster_resources(), base.resources.workers, base.resources.gpu)
    if records:
        log(f"resuming the sweep in {sweep_dir}: {plan.describe()}")
    else:
        log(f"sweep {name}: {plan.total} trials ({space.search} search{', ASHA' if space.scheduler else ''}), "
            f"{n_parallel} at a time, {base.resources.workers} workers each -> {sweep_dir}")
    if plan.runs:
        _run_tuner(space, trial_base(base, source), sweep_dir, plan, n_parallel, cpu_budget, seed=base.train.seed + len(records),
                   log=log)
    records = read_trials(trials_dir)
    order = [records[c["name"]] for c in cells if c["name"] in records] if space.search == "grid" else (
        sorted(records.values(), key=lambda r: r.started))
    return summarise(order, space, base, sweep_dir, log)


@dataclass
class SweepPlan:
    """What a (re)run of a sweep runs: grid cells ``todo``; or, sampled, the trials ``again``
    (started, not done: continued from their checkpoints) and ``draws`` new ones."""

    todo: list[dict] = field(default_factory=list)
    done: list[TrialRecord] = field(default_factory=list)
    again: list[TrialRecord] = field(default_factory=list)
    draws: int = 0
    total: int = 0

    @property
    def runs(self) -> int:
        return len(self.todo) + len(self.again) + self.draws

    @property
    def taken(self) -> set[str]:
        """The names the sweep's trials already have."""
        return {r.name for r in self.done + self.again}

    def describe(self) -> str:
        if self.todo or not (self.again or self.draws or self.done):
            return f"cells: {self.total - len(self.todo)} of {self.total} done, {len(self.todo)} to run"
        return f"trials: {len(self.done)} done, {len(self.again)} to continue, {self.draws} to draw"


def _run_tuner(space: TuneSpace, base: JobConfig, sweep_dir: Path, plan: SweepPlan, n_parallel: int, cpu_budget: float,
               seed: int, log) -> None:
    """A fresh Tuner for the plan's trials, at most ``n_parallel`` at a time."""
    from ray import tune

    trials_dir = sweep_dir / "trials"
    trainable = tune.with_resources(
        tune.with_parameters(_trial, base=dump_config(base), trials_dir=str(trials_dir), cpu_budget=cpu_budget),
        trial_resources(base, cpu_budget),
    )
    if space.search == "grid":
        searcher, param_space, samples = None, {CELL: tune.grid_search(plan.todo)}, 1
    else:
        searcher, param_space = _searcher(space, seed, _param_space(space), plan.done, plan.again, plan.taken), None
        samples = len(plan.again) + plan.draws
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(metric=METRIC, mode="max", search_alg=searcher, scheduler=_scheduler(space, base.train.epochs),
                                    num_samples=samples, max_concurrent_trials=n_parallel,
                                    # trials trained in their own process: one process runs trial after trial
                                    reuse_actors=base.resources.trainer == "in_process"),
        # Tune's own files go beside the trials; nothing is restored from them
        run_config=tune.RunConfig(name=f"run-{time.strftime('%Y%m%d-%H%M%S')}", storage_path=str(sweep_dir / "tune"),
                                  callbacks=[TrialLog(trials_dir, METRIC), FreeStoppedRunsCallback()]),
    )
    with freeing_leaked_groups(log):  # a killed earlier driver may have left its trial's CPUs held
        tuner.fit()


def _trial_rows(records: list[TrialRecord], space: TuneSpace) -> list[dict]:
    rows = []
    for r in records:
        saved = r.metrics or {}
        test = saved.get("test")
        rows.append({
            "trial": r.name,
            **{k: r.params.get(k) for k in space.params},
            "best_dev_gauc": r.best_dev_gauc,
            "epochs_run": r.epochs_run,
            "finished": r.status == "finished",
            "status": r.status,
            "test_gauc": None if test is None else test["gauc"],
            "test_auc": None if test is None else test["auc"],
            "train_domains": (saved.get("domains") or {}).get("train"),
            # worker failures the trial's run recovered from (Ray Train restarted it from its checkpoint)
            "worker_restarts": sum(1 for x in saved.get("restarts", []) if x.get("kind") == "worker_failure"),
            "error": r.error if r.status == "error" else None,
        })
    return rows


def _best_yaml(space: TuneSpace, base: JobConfig, best: dict, sweep_dir: Path) -> dict:
    """The winner as a run config: the sweep's options with the best trial's parameters."""
    own = {**trial_options({k: best[k] for k in space.params}), "output.dir": str(sweep_dir / "best"), "output.name": "best"}
    opts = deep_merge(dump_config(base), nest(own, "best.yaml"))
    opts.pop("faults", None)
    opts.get("resources", {}).pop("address", None)
    return dump_config(validate(JobConfig, opts, "best.yaml"))


def _plot_boundary(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted((parse_boundary(r["sparsity_boundary"]), r["best_dev_gauc"]) for r in rows if not math.isnan(r["best_dev_gauc"]))
    if not points:
        return
    labels = sorted({p for p, _ in points})
    x = {p: i for i, p in enumerate(labels)}
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.scatter([x[p] for p, _ in points], [g for _, g in points], color="tab:blue", alpha=0.5, label="trials")
    means = [sum(g for p, g in points if p == lab) / sum(1 for p, _ in points if p == lab) for lab in labels]
    ax.plot(range(len(labels)), means, marker="o", color="tab:blue", label="mean")
    ax.set_xticks(range(len(labels)), [f"[{a:g}, {b:g}]" for a, b in labels])
    ax.set_xlabel("sparsity ratio boundary [r_min, r_max]")
    ax.set_ylabel("dev GAUC (best epoch)")
    ax.set_title("Effect of the sparsity boundary (cf. paper Fig. 3(d))")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _domain_partitions(rows: list[dict], key: str, sweep_dir: Path) -> None:
    """Test AUC and GAUC against the number of train domains, one point per domain key (cf. the
    paper's Fig. 3(c)): ``domain_partitions.png`` and ``domain_partitions.json``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted(({"domain_fields": list(r[key]), "train_domains": r["train_domains"], "test_auc": r["test_auc"],
                      "test_gauc": r["test_gauc"]} for r in rows if r["finished"] and r["train_domains"]),
                    key=lambda p: p["train_domains"])
    write_text_atomic(sweep_dir / "domain_partitions.json", json.dumps(points, indent=2))
    if not points:
        return
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    x = [p["train_domains"] for p in points]
    ax.plot(x, [p["test_auc"] for p in points], marker="o", label="test AUC")
    ax.plot(x, [p["test_gauc"] for p in points], marker="s", label="test GAUC")
    for p in points:
        ax.annotate(" + ".join(p["domain_fields"]), (p["train_domains"], p["test_auc"]), fontsize=6,
                    textcoords="offset points", xytext=(3, 4))
    ax.set_xscale("log")
    ax.set_xlabel("domains in the train split (domain key: the fields named)")
    ax.set_title("Effect of the domain partition (cf. paper Fig. 3(c))")
    ax.legend()
    fig.tight_layout()
    fig.savefig(sweep_dir / "domain_partitions.png", dpi=120)
    plt.close(fig)


def summarise(records: list[TrialRecord], space: TuneSpace, base: JobConfig, sweep_dir: Path, log=print) -> dict:
    rows = _trial_rows(records, space)
    cols = ["trial", *space.params, "best_dev_gauc", "epochs_run", "status", "test_gauc", "worker_restarts", "error"]
    with open(sweep_dir / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    log("")
    log("  ".join(f"{c:>16}" if c != "error" else c for c in cols))
    for r in sorted(rows, key=lambda r: -r["best_dev_gauc"] if not math.isnan(r["best_dev_gauc"]) else math.inf):
        cells = []
        for c in cols:
            v = r[c]
            cells.append((f"{v:>16.4f}" if isinstance(v, float) else f"{'' if v is None else v!s:>16}") if c != "error" else (v or ""))
        log("  ".join(cells))
    for r in rows:
        if r["worker_restarts"]:
            log(f"trial {r['trial']}: recovered from {r['worker_restarts']} worker failure(s), restarted from its last checkpoint")
        if r["error"]:
            log(f"trial {r['trial']} failed: {r['error']}")
    ranked = [r for r in rows if not math.isnan(r["best_dev_gauc"])]
    if not ranked:
        first = next((r["error"] for r in rows if r["error"]), None)
        raise RuntimeError(f"no trial of {sweep_dir} reported a dev GAUC; see {sweep_dir}/trials for their logs"
                           + (f"; the first error: {first}" if first else ""))
    # the winner among finished trials (they have test metrics); an early-stopped one only if none finished
    finished = [r for r in ranked if r["finished"]]
    best = max(finished or ranked, key=lambda r: r["best_dev_gauc"])
    best_cfg = _best_yaml(space, base, best, sweep_dir)
    write_text_atomic(sweep_dir / "best.yaml",
                      "# the best trial of the sweep: adasparse train --config best.yaml\n" + yaml.safe_dump(best_cfg, sort_keys=False))
    trial_metrics = sweep_dir / "trials" / best["trial"] / "metrics.json"
    saved = json.loads(trial_metrics.read_text()) if trial_metrics.exists() else {}
    summary = {"best_trial": best["trial"], "params": {k: best[k] for k in space.params}, "best_dev_gauc": best["best_dev_gauc"],
               "dev": saved.get("dev"), "test": saved.get("test"), "trials": rows}
    write_text_atomic(sweep_dir / "best.json", json.dumps(summary, indent=2, default=str))
    partition = next((k for k in space.params if resolve_key(k) == ("ingest", "domain_fields")), None)
    if partition is not None:
        _domain_partitions(rows, partition, sweep_dir)
    if BOUNDARY in space.params:
        _plot_boundary(rows, sweep_dir / "sparsity_boundary.png")
    t = summary["test"]
    test = f"test LogLoss {t['logloss']:.5f} AUC {t['auc']:.4f} GAUC {t['gauc']:.4f}" if t else "no test metrics (stopped early)"
    log(f"\nbest trial {best['trial']}: dev GAUC {best['best_dev_gauc']:.4f}, {test}")
    log(f"results: {sweep_dir / 'results.csv'}; best run config: {sweep_dir / 'best.yaml'}")
    return summary


def main(argv: list[str] | None = None) -> int:
    from pipelines.runtime.exit_status import run_command

    p = job_parser("adasparse tune", "Ray Tune sweep of the training job against dev GAUC")
    p.add_argument("--space", required=True, help="search space YAML (see tune_spaces/)")
    p.add_argument("--trials", type=int, help="trials to sample (grid: repeats of the whole grid); default 8, grid 1")
    args = vars(p.parse_args(argv))

    def body() -> None:
        if args["trials"] is not None and args["trials"] < 1:
            raise ConfigError("--trials must be at least 1")
        space = load_space(args["space"])
        opts = given_options(args)
        searched = searched_paths(space)
        clash = [k for k in opts if resolve_key(k) in searched]
        if clash:
            raise ConfigError(f"--{clash[0].replace('_', '-')}: searched by {args['space']}; drop the option or the parameter")
        file = load_config_file(args["config"]) if args.get("config") else {}
        # the config file, then the space's fixed options, then the flags
        base = validate(JobConfig, deep_merge(deep_merge(file, nest(space.fixed, args["space"])), nest(opts, "options")), "options")
        if "://" not in base.data:  # trials run in their own directories: a relative path would not resolve there
            base = base.model_copy(update={"data": str(Path(base.data).resolve())})
        if "://" in base.output.dir:
            raise ConfigError(f"--out {base.output.dir}: sweeps write to a local or shared directory (s3:// is for adasparse train)")
        name = base.output.name or space.name
        sweep(space, base, args["trials"], base.output.dir, name)

    return run_command("adasparse tune", body)


if __name__ == "__main__":
    sys.exit(main())
