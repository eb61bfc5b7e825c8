"""How test GAUC (and AdaSparse's per-domain sparsity) changes with one or more settings, on the
generators of adasparse.synthetic.PRESETS, over several seeds: the studies behind the defaults
in docs/model.md ("Sensitivity").

Each ``--set KEY=V1,V2,...`` is one axis of the grid: ``optim.lr``, ``optim.embedding_lr`` or a
model key (``model.embedding.init_std``, ``model.pruner.sparsity_scope``, ...). Every model of
``--kinds`` is trained on every point, seed and dataset in one process (the model library alone,
no Ray); dev GAUC picks the epoch. Prints one row per run, then per (data, kind, setting) the
mean test GAUC and its mean paired difference from the grid's first point (same seeds).
Nothing here is asserted (a measurement, not a test).

    python benchmarks/sensitivity.py --data default,users --set optim.lr=3e-4,1e-3,3e-3
    python benchmarks/sensitivity.py --kinds adasparse --set model.pruner.sparsity_scope=batch,domain \\
        --set model.pruner.input=instance,domain
"""

from __future__ import annotations

import argparse
import itertools
import statistics

import numpy as np
import yaml

from adasparse.config import ModelConfig, OptimConfig
from adasparse.experiment import run_model, set_threads, synthetic_splits
from adasparse.synthetic import PRESETS


def parse_axis(text: str) -> tuple[str, list]:
    key, sep, values = text.partition("=")
    if not sep or not values or not (key.startswith("optim.") or key.startswith("model.")):
        raise SystemExit(f"--set {text!r}: expected optim.KEY=V1,V2 or model.KEY=V1,V2")
    return key, [yaml.safe_load(v) for v in values.split(",")]


def nested(assignments: dict[str, object], section: str) -> dict:
    out: dict = {}
    for key, value in assignments.items():
        head, *path = key.split(".")
        if head != section:
            continue
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def domain_spread(r: dict, cfg: ModelConfig) -> tuple[float, float]:
    """(share of test rows whose domain has every layer's r^l inside [r_min, r_max], the
    row-weighted standard deviation of the domains' r^l averaged over layers)."""
    ds = r["domain_sparsity"]
    if ds is None:
        return float("nan"), float("nan")
    p = cfg.pruner
    mean = ds.mean
    inside = ((mean >= p.r_min) & (mean <= p.r_max)).all(axis=1)
    w = ds.rows / ds.rows.sum()
    per_domain = mean.mean(axis=1)
    centre = float(w @ per_domain)
    return float(w @ inside), float(np.sqrt(w @ (per_domain - centre) ** 2))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="default,users", help=f"generators, of {', '.join(PRESETS)}")
    p.add_argument("--kinds", default="plain,adasparse")
    p.add_argument("--set", dest="axes", action="append", default=[], help="KEY=V1,V2,... (repeatable: a grid)")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--rows", type=int, default=600_000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=256)
    args = p.parse_args()
    set_threads()
    axes = [parse_axis(a) for a in args.axes]
    points = [dict(zip([k for k, _ in axes], combo)) for combo in itertools.product(*[v for _, v in axes])] or [{}]
    label = lambda point: " ".join(f"{k.split('.')[-1]}={v}" for k, v in point.items()) or "defaults"  # noqa: E731
    print(f"{'data':<8} {'kind':<10} {'setting':<36} {'seed':>4} {'best ep':>7} {'dev GAUC':>9} {'test GAUC':>9} "
          f"{'test AUC':>9} {'r (test)':>8} {'in bound':>8} {'r spread':>8}", flush=True)
    for data in args.data.split(","):
        gauc: dict[tuple[str, str], dict[int, float]] = {}
        for seed in (int(s) for s in args.seeds.split(",")):
            splits = synthetic_splits(PRESETS[data], args.rows, seed)
            done: set[tuple[str, str]] = set()
            for kind, point in itertools.product(args.kinds.split(","), points):
                if kind == "plain":  # the plain backbone has no pruner: its keys do not change the run
                    point = {k: v for k, v in point.items() if not k.startswith("model.pruner.")}
                if (kind, label(point)) in done:
                    continue
                done.add((kind, label(point)))
                model = nested(point, "model")
                cfg = ModelConfig(**{"kind": kind, **model, "features": splits.features})
                optim = OptimConfig(**nested(point, "optim"))
                r = run_model(cfg, splits, epochs=args.epochs, batch_size=args.batch_size, optim=optim, seed=seed)
                t = r["test"]
                inside, spread = domain_spread(r, cfg)
                ratio = statistics.mean(r["sparsity"]) if r["sparsity"] else float("nan")
                gauc.setdefault((kind, label(point)), {})[seed] = t["gauc"]
                print(f"{data:<8} {kind:<10} {label(point):<36} {seed:>4} {r['best_epoch']:>7} {r['dev']['gauc']:>9.4f} "
                      f"{t['gauc']:>9.4f} {t['auc']:>9.4f} {ratio:>8.3f} {inside:>8.2%} {spread:>8.3f}", flush=True)
        for kind, setting in gauc:
            base = gauc[next(key for key in gauc if key[0] == kind)]
            vals = gauc[(kind, setting)]
            diff = statistics.mean(vals[s] - base[s] for s in vals)
            print(f"{data}: {kind:<10} {setting:<36} mean test GAUC {statistics.mean(vals.values()):.4f} "
                  f"(paired Δ vs first {diff:+.4f}) over {len(vals)} seeds", flush=True)


if __name__ == "__main__":
    main()
