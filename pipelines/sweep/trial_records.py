"""A sweep's trials as files: what each trial ran with, what it reported and how it ended — the
state a rerun of the sweep resumes from.

Tune's own experiment state is never restored: ``Tuner.restore`` restarts every unfinished trial
at once, whatever the concurrency limit (Ray #40652: 30 trials on 2 CPUs), and it unpickles
``tuner.pkl``. A rerun reads these files instead and runs a fresh ``Tuner`` on what is left
(:func:`pipelines.sweep.tune.sweep`). Under ``trials/<name>/``:

* ``trial.json`` — written by the trial when it starts: its name, parameters and extra options;
* ``results.jsonl`` — one line per epoch (epoch, dev GAUC), appended by the sweep's driver;
* ``ended.json`` — written by the driver when Tune ends the trial: ``finished``, ``stopped``
  (the scheduler stopped it) or ``error`` (with the error's first line);
* ``metrics.json`` — the training run's own closing record (test metrics): a finished run.

A trial's name is its identity: a grid cell's is given by the sweep (readable: ``star-dnn-seed0``),
a sampled trial's is a digest of its parameters (``-2``, ``-3`` … when the same parameters are
drawn again), given by the sweep's searcher (:class:`NamedTrials`); a trial continued after an
interruption gets its old name back, so it finds its run directory and its last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from ray.tune import Callback
from ray.tune.search import Searcher

from adasparse.host import write_text_atomic

TRIAL_FILE = "trial.json"
RESULTS_FILE = "results.jsonl"
ENDED_FILE = "ended.json"
METRICS_FILE = "metrics.json"
CELL = "cell"  # a grid sweep's one Tune parameter: {"name", "params", "extra"} of the cell
NAME = "trial_name"  # a sampled trial's name, added to its config by the sweep's searcher (NamedTrials)
DONE = ("finished", "stopped")


def sampled_name(params: dict) -> str:
    """The name of a sampled trial: a digest of its parameters."""
    text = json.dumps(params, sort_keys=True, default=str)
    return "t" + hashlib.sha1(text.encode()).hexdigest()[:10]


def cell_name(params: dict) -> str:
    """A readable name for a grid cell: its values, joined (a digest when too long)."""
    parts = []
    for key, value in params.items():
        text = "-".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) if isinstance(value, (list, tuple)) else (
            f"{value:g}" if isinstance(value, float) else str(value))
        parts.append(f"{key.rsplit('.', 1)[-1]}={text}")
    name = re.sub(r"[^A-Za-z0-9_.=+-]", "_", "_".join(parts))
    return name if 0 < len(name) <= 100 else sampled_name(params)


def identify(config: dict) -> tuple[str, dict, dict]:
    """(name, parameters, extra options) of the trial Tune runs with ``config``."""
    if CELL in config:
        cell = config[CELL]
        return cell["name"], dict(cell["params"]), dict(cell.get("extra") or {})
    params = {k: v for k, v in config.items() if k != NAME}
    return config.get(NAME) or sampled_name(params), params, {}


def write_start(trials_dir: Path, name: str, params: dict, extra: dict) -> None:
    """``trial.json`` of a trial that starts (kept from its first start when it continues)."""
    path = trials_dir / name / TRIAL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        write_text_atomic(path, json.dumps({"name": name, "params": params, "extra": extra, "started": time.time()},
                                           indent=2, default=str))


@dataclass
class TrialRecord:
    name: str
    params: dict
    extra: dict = field(default_factory=dict)
    started: float = 0.0
    dev_gauc: dict[int, float] = field(default_factory=dict)  # epoch → dev GAUC (the last report of that epoch)
    status: str = "interrupted"  # finished | stopped | error | interrupted (no end recorded: the driver died)
    error: str | None = None
    metrics: dict | None = None

    @property
    def done(self) -> bool:
        """Nothing left to run: finished, or stopped by the scheduler."""
        return self.status in DONE

    @property
    def best_dev_gauc(self) -> float:
        values = [g for g in self.dev_gauc.values() if not math.isnan(g)]
        return max(values) if values else float("nan")

    @property
    def last_dev_gauc(self) -> float:
        return self.dev_gauc[max(self.dev_gauc)] if self.dev_gauc else float("nan")

    @property
    def epochs_run(self) -> int:
        return max(self.dev_gauc, default=0)


def _read_results(path: Path) -> dict[int, float]:
    out: dict[int, float] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a killed driver
                continue
            out[int(rec["epoch"])] = float(rec["dev_gauc"])
    return out


def read_trials(trials_dir: Path) -> dict[str, TrialRecord]:
    """Every trial that started under ``trials_dir``, by name."""
    records = {}
    for start in sorted(trials_dir.glob(f"*/{TRIAL_FILE}")):
        d = start.parent
        info = json.loads(start.read_text())
        rec = TrialRecord(name=info["name"], params=info["params"], extra=info.get("extra") or {},
                          started=float(info.get("started", 0.0)), dev_gauc=_read_results(d / RESULTS_FILE))
        if (d / METRICS_FILE).exists():
            rec.metrics = json.loads((d / METRICS_FILE).read_text())
            rec.status = "finished"
            for h in rec.metrics.get("history") or []:  # a finished run's own history fills what the driver missed
                if h.get("epoch") is not None and h.get("dev_gauc") is not None:
                    rec.dev_gauc.setdefault(int(h["epoch"]), float(h["dev_gauc"]))
        elif (d / ENDED_FILE).exists():
            ended = json.loads((d / ENDED_FILE).read_text())
            rec.status, rec.error = ended["status"], ended.get("error")
        records[rec.name] = rec
    return records


class NamedTrials(Searcher):
    """The sweep's searcher around Tune's: hands out the trials to continue first (``again``:
    their own parameters and names), then names every draw of ``inner`` by a digest of its
    parameters, unique among ``taken`` (every trial the sweep already has) and this run's."""

    def __init__(self, inner: Searcher, again: list[TrialRecord], taken: set[str], metric: str):
        super().__init__(metric=metric, mode="max")
        self.inner, self.again, self.taken, self.drawn = inner, list(again), set(taken), set()

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return self.inner.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str):
        if self.again:
            rec = self.again.pop(0)
            return {**rec.params, NAME: rec.name}
        config = self.inner.suggest(trial_id)
        if not isinstance(config, dict):  # None (wait) or FINISHED
            return config
        self.drawn.add(trial_id)
        base = name = sampled_name(config)
        k = 1
        while name in self.taken:
            k += 1
            name = f"{base}-{k}"
        self.taken.add(name)
        return {**config, NAME: name}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self.drawn:
            self.inner.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self.drawn:  # the continued ones were told to the inner searcher as points, or not at all
            self.inner.on_trial_complete(trial_id, result=result, error=error)


def error_line(error) -> str:
    """An error's last non-empty line (a remote traceback ends with the exception and its message)."""
    lines = [ln.strip() for ln in str(error or "").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "failed"


class TrialLog(Callback):
    """Tune callback on the sweep's driver: appends each epoch's dev GAUC to the trial's
    ``results.jsonl`` and writes ``ended.json`` when Tune ends the trial."""

    def __init__(self, trials_dir: Path, metric: str):
        self.trials_dir, self.metric = trials_dir, metric

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("epoch") is None or result.get(self.metric) is None:
            return
        name = identify(trial.config)[0]
        path = self.trials_dir / name / RESULTS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:
            fh.write(json.dumps({"epoch": int(result["epoch"]), "dev_gauc": float(result[self.metric])}) + "\n")

    def on_trial_complete(self, iteration, trials, trial, **info):
        name = identify(trial.config)[0]
        status = "finished" if (self.trials_dir / name / METRICS_FILE).exists() else "stopped"
        self._ended(name, {"status": status})

    def on_trial_error(self, iteration, trials, trial, **info):
        self._ended(identify(trial.config)[0], {"status": "error", "error": error_line(trial.get_pickled_error() or trial.get_error())})

    def _ended(self, name: str, record: dict) -> None:
        d = self.trials_dir / name
        d.mkdir(parents=True, exist_ok=True)
        write_text_atomic(d / ENDED_FILE, json.dumps(record))
