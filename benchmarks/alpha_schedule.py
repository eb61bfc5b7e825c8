"""How the α schedule changes test GAUC (the study behind ``alpha_anneal_fraction``'s default).

AdaSparse (Fusion) on generated data of two structurally different generators, with α reaching
α_max after a fraction of the planned run (and the round-1 fixed schedule, 20,000 steps of 256
samples, for reference), over several seeds; dev GAUC picks the epoch. Prints one row per run
and a mean per schedule; nothing here is asserted (a measurement, not a test).

    python benchmarks/alpha_schedule.py --rows 600000 --epochs 2 --seeds 0,1
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import replace

from adasparse.config import ModelConfig
from adasparse.experiment import run_model, set_threads, synthetic_splits
from adasparse.synthetic import SyntheticSpec

DATASETS = {
    "default": SyntheticSpec(),
    # fewer, flatter domains with strong group effects and a high base rate (tests/library/test_learning.py's world)
    "grouped": replace(SyntheticSpec(), domain_cardinalities=(4, 6, 8), group_sharpness=20.0, domain_zipf=0.3, value_zipf=0.5,
                       shared_scale=0.0, group_scale=3.0, domain_bias_std=0.3, base_ctr=0.25),
}
FIXED_ROUND1 = 20_000 * 256  # the round-1 default: 20,000 steps of 256 rows, whatever the run's length


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=600_000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--fractions", default="0.25,0.5,1.0")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--datasets", default=",".join(DATASETS))
    args = p.parse_args()
    set_threads()
    schedules = [(f"fraction {f}", {"alpha_anneal_fraction": float(f)}) for f in args.fractions.split(",")]
    schedules.append(("fixed 5.12M samples", {"alpha_anneal_samples": FIXED_ROUND1}))
    print(f"{'data':<8} {'schedule':<20} {'seed':>4} {'best epoch':>10} {'α at end':>8} {'dev GAUC':>9} {'test GAUC':>9} {'test AUC':>9}")
    for data in args.datasets.split(","):
        means: dict[str, list[float]] = {}
        for seed in (int(s) for s in args.seeds.split(",")):
            splits = synthetic_splits(DATASETS[data], args.rows, seed)
            for name, pruner in schedules:
                cfg = ModelConfig(kind="adasparse", features=splits.features, pruner={"formulation": "fusion", **pruner})
                r = run_model(cfg, splits, epochs=args.epochs, batch_size=256, seed=seed)
                t = r["test"]
                means.setdefault(name, []).append(t["gauc"])
                print(f"{data:<8} {name:<20} {seed:>4} {r['best_epoch']:>10} {r['history'][-1]['alpha']:>8.2f} "
                      f"{r['dev']['gauc']:>9.4f} {t['gauc']:>9.4f} {t['auc']:>9.4f}", flush=True)
        for name, vals in means.items():
            print(f"{data:<8} {name:<20} mean test GAUC {statistics.mean(vals):.4f} over {len(vals)} seeds", flush=True)


if __name__ == "__main__":
    main()
