"""A small run's fixed costs and a sweep's per-trial overhead, for one or more checkouts of the
code side by side in one run (issue 29: before/after, the old code in a git worktree).

For each tree (``--tree LABEL=PATH``, default ``now=`` this checkout) the same two things run
as a user runs them, with that tree's code first on the path (``PYTHONPATH=PATH``, started in
``PATH``) and the same interpreter:

* one run: ``adasparse train --epochs E --workers 1`` with the library's defaults and a private
  local Ray; its wall time from outside, and from its own ``metrics.json`` the training time
  (the epochs' ``train_s``), the stages of ``benchmarks/scale.py`` and the ratio wall ÷ training;
* a sweep: ``adasparse tune`` of ``--trials`` plain trials (a random learning rate each, no early
  stopping, one trial at a time on this machine); per trial the time from its process's start
  to its result (``timeline.fit_ended``) less its training: the per-trial overhead a sweep pays
  (Tune's gap between one trial's end and the next one's start is in the sweep's wall time).

The data is ``--data SPEC`` (e.g. ``adasparse convert movielens`` of ml-latest-small, the
issue's reference), else 100k generated rows. Ray Train's controller poll interval
(``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S``) is removed from the environment of every tree, so each
uses what its own code sets.

    git worktree add /tmp/before <commit>
    python benchmarks/fixed_costs.py --data DIR/spec.yaml --tree before=/tmp/before --tree now=.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import stages  # noqa: E402 - the stage table of the scale benchmark

ROOT = Path(__file__).resolve().parents[1]
SPACE = """name: overhead
description: plain trials with a random learning rate and no early stopping (benchmarks/fixed_costs.py)
search: random
scheduler: null
fixed:
  model.kind: plain
params:
  optim.lr: {loguniform: [3.0e-4, 3.0e-3]}
"""


def tree_env(tree: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"}
    env["PYTHONPATH"] = str(tree) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("RAY_AUTH_MODE", "disabled")
    return env


def cli(tree: Path, args: list[str], log: Path) -> float:
    """``adasparse ARGS`` from ``tree``'s code; its wall seconds."""
    t0 = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=tree, env=tree_env(tree),
                              stdout=out, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{tree}: adasparse {args[0]} failed ({proc.returncode}); its output: {log}")
    return wall


def training_s(metrics: dict) -> float:
    return sum(h["train_s"] for h in metrics["history"])


def one_run(tree: Path, data: str, work: Path, epochs: int) -> dict:
    out = work / "run"
    wall = cli(tree, ["train", "--data", data, "--epochs", str(epochs), "--workers", "1", "--out", str(out),
                      "--name", "r"], work / "train.log")
    metrics = json.loads((out / "r" / "metrics.json").read_text())
    train = training_s(metrics)
    return {"wall_s": wall, "train_s": train, "ratio": wall / train, "stages": stages(metrics, wall),
            "test": metrics["test"]}


def sweep(tree: Path, data: str, work: Path, epochs: int, trials: int) -> dict:
    space = work / "space.yaml"
    space.write_text(SPACE)
    wall = cli(tree, ["tune", "--space", str(space), "--trials", str(trials), "--data", data, "--epochs", str(epochs),
                      "--workers", "1", "--out", str(work / "sweep")], work / "tune.log")
    per = []
    for f in sorted((work / "sweep").rglob("trials/*/metrics.json")):
        m = json.loads(f.read_text())
        life = m["timeline"]["fit_ended"]  # from the trial's process start to its result
        per.append({"life_s": life, "fit_s": m["wall_s"], "train_s": training_s(m), "overhead_s": life - training_s(m)})
    if len(per) != trials:
        raise SystemExit(f"{tree}: {len(per)} of {trials} trials wrote metrics.json ({work / 'tune.log'})")
    return {"wall_s": wall, "trials": per}


def generated(work: Path, rows: int) -> str:
    data = work / "data"
    subprocess.run([sys.executable, "-m", "pipelines.cli", "generate", "--rows", str(rows), "--out", str(data)],
                   cwd=ROOT, env=tree_env(ROOT), check=True, capture_output=True)
    return str(data / "spec.yaml")


def print_tables(results: dict[str, dict]) -> None:
    labels = list(results)
    print("\n| one run | " + " | ".join(labels) + " |")
    print("|---|" + "---:|" * len(labels))
    first = results[labels[0]]["run"]["stages"]
    for i, (name, _, _) in enumerate(first):
        print(f"| {name} | " + " | ".join(f"{r['run']['stages'][i][1]:.2f}" for r in results.values()) + " |")
    for key, label in (("wall_s", "wall time of the command (s)"), ("train_s", "training, all epochs (s)"),
                       ("ratio", "wall ÷ training")):
        print(f"| **{label}** | " + " | ".join(f"**{r['run'][key]:.2f}**" for r in results.values()) + " |")
    print("| test LogLoss / AUC / GAUC | " + " | ".join(
        "{logloss:.5f} / {auc:.4f} / {gauc:.4f}".format(**r["run"]["test"]) for r in results.values()) + " |")
    print("\n| sweep | " + " | ".join(labels) + " |")
    print("|---|" + "---:|" * len(labels))

    def row(label: str, fn) -> None:
        print(f"| {label} | " + " | ".join(fn(r["sweep"]) for r in results.values()) + " |")

    row("trials", lambda s: str(len(s["trials"])))
    row("wall time of the sweep (s)", lambda s: f"{s['wall_s']:.1f}")
    row("per trial: its process start to its result (s, mean)",
        lambda s: f"{statistics.mean(t['life_s'] for t in s['trials']):.2f}")
    row("per trial: of which the fit (s, mean)", lambda s: f"{statistics.mean(t['fit_s'] for t in s['trials']):.2f}")
    row("per trial: training (s, mean)", lambda s: f"{statistics.mean(t['train_s'] for t in s['trials']):.2f}")
    row("**per trial: overhead (s, mean)**", lambda s: f"**{statistics.mean(t['overhead_s'] for t in s['trials']):.2f}**")
    row("per trial: overhead (s, max)", lambda s: f"{max(t['overhead_s'] for t in s['trials']):.2f}")
    row("sweep wall ÷ trials (s)", lambda s: f"{s['wall_s'] / len(s['trials']):.2f}")
    row("sweep wall ÷ trials, less training (s)",
        lambda s: f"{s['wall_s'] / len(s['trials']) - statistics.mean(t['train_s'] for t in s['trials']):.2f}")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", action="append", default=None, metavar="LABEL=PATH",
                    help="a checkout to measure (repeatable; default: now=this checkout)")
    ap.add_argument("--data", default=None, help="dataset spec (default: 100k generated rows)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--json", default=None, help="also write the results here")
    opts = ap.parse_args(argv)
    trees = {}
    for t in opts.tree or [f"now={ROOT}"]:
        label, _, path = t.partition("=")
        if not path or not (Path(path) / "pipelines" / "cli.py").exists():
            raise SystemExit(f"--tree {t}: not LABEL=PATH of a checkout of this project")
        trees[label] = Path(path).resolve()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="fixed-costs-") as tmp:
        work = Path(tmp)
        data = opts.data or generated(work, 100_000)
        for label, tree in trees.items():
            w = work / label
            w.mkdir()
            print(f"{label}: one run ({tree})", flush=True)
            run = one_run(tree, data, w, opts.epochs)
            print(f"{label}: a sweep of {opts.trials} trials", flush=True)
            results[label] = {"run": run, "sweep": sweep(tree, data, w, opts.epochs, opts.trials)}
            shutil.rmtree(w, ignore_errors=True)
    print_tables(results)
    if opts.json:
        Path(opts.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
