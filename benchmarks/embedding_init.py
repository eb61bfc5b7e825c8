"""How the embedding initialisation N(0, σ) changes test GAUC (the study behind the default).

Same generated data, same DNN / AdaSparse, one σ per row; dev-GAUC picks the epoch.
Prints one table; nothing here is asserted (it is a measurement, not a test).

    python benchmarks/embedding_init.py --rows 600000 --epochs 3
"""

from __future__ import annotations

import argparse

from adasparse.config import ModelConfig
from adasparse.experiment import run_model, set_threads, synthetic_splits
from adasparse.synthetic import SyntheticSpec


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=600_000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--stds", default="0.01,0.1,0.3,1.0")
    p.add_argument("--kinds", default="dnn,adasparse")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    set_threads()
    splits = synthetic_splits(SyntheticSpec(), args.rows, args.seed)
    print(f"{'model':<10} {'init std':>8} {'best epoch':>10} {'dev GAUC':>9} {'test GAUC':>9} {'test AUC':>9} {'test logloss':>12}  dev GAUC per epoch")
    for kind in args.kinds.split(","):
        for std in (float(s) for s in args.stds.split(",")):
            cfg = ModelConfig(kind=kind, features=splits.features, embedding={"init_std": std})
            r = run_model(cfg, splits, epochs=args.epochs, batch_size=256, seed=args.seed)
            per_epoch = " ".join(f"{h['dev_gauc']:.4f}" for h in r["history"])
            t = r["test"]
            print(
                f"{kind:<10} {std:>8g} {r['best_epoch']:>10} {r['dev']['gauc']:>9.4f} {t['gauc']:>9.4f} "
                f"{t['auc']:>9.4f} {t['logloss']:>12.5f}  {per_epoch}",
                flush=True,
            )


if __name__ == "__main__":
    main()
