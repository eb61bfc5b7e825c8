"""How the embedding initialisation N(0, σ) changes test GAUC (the study behind the default).

Same generated data, same DNN / AdaSparse, one σ per row; dev-GAUC picks the epoch. ``--data``
picks the generator (the two of benchmarks/alpha_schedule.py), ``--seeds`` repeats everything.
Prints one table and a mean per (model, σ); nothing here is asserted (a measurement, not a test).

    python benchmarks/embedding_init.py --rows 600000 --epochs 3
    python benchmarks/embedding_init.py --data grouped --seeds 0,1 --stds 0.01,0.1,1.0
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from adasparse.config import ModelConfig
from adasparse.experiment import run_model, set_threads, synthetic_splits

sys.path.insert(0, str(Path(__file__).parent))
from alpha_schedule import DATASETS  # noqa: E402  (the two generators of the schedule study)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=600_000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--stds", default="0.01,0.1,0.3,1.0")
    p.add_argument("--kinds", default="dnn,adasparse")
    p.add_argument("--seeds", default="0")
    p.add_argument("--data", default="default", choices=sorted(DATASETS))
    args = p.parse_args()
    set_threads()
    print(f"{'model':<10} {'init std':>8} {'seed':>4} {'best epoch':>10} {'dev GAUC':>9} {'test GAUC':>9} {'test AUC':>9} "
          f"{'test logloss':>12}  dev GAUC per epoch")
    means: dict[tuple[str, float], list[float]] = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        splits = synthetic_splits(DATASETS[args.data], args.rows, seed)
        for kind in args.kinds.split(","):
            for std in (float(s) for s in args.stds.split(",")):
                cfg = ModelConfig(kind=kind, features=splits.features, embedding={"init_std": std})
                r = run_model(cfg, splits, epochs=args.epochs, batch_size=256, seed=seed)
                per_epoch = " ".join(f"{h['dev_gauc']:.4f}" for h in r["history"])
                t = r["test"]
                means.setdefault((kind, std), []).append(t["gauc"])
                print(
                    f"{kind:<10} {std:>8g} {seed:>4} {r['best_epoch']:>10} {r['dev']['gauc']:>9.4f} {t['gauc']:>9.4f} "
                    f"{t['auc']:>9.4f} {t['logloss']:>12.5f}  {per_epoch}",
                    flush=True,
                )
    for (kind, std), vals in means.items():
        print(f"{args.data}: {kind:<10} σ {std:<6g} mean test GAUC {statistics.mean(vals):.4f} over {len(vals)} seeds")


if __name__ == "__main__":
    main()
