"""``adasparse`` command line.

Subcommands that need Ray (train, generate, tune, ...) live in ``pipelines/`` and are imported
only when called, so the model library never imports Ray.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _demo(args: argparse.Namespace) -> int:
    from adasparse.experiment import demo, set_threads

    set_threads()
    demo(Path(args.out), rows=args.rows, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="adasparse", description="AdaSparse multi-domain CTR prediction")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="train DNN and AdaSparse on generated data in one process and compare")
    d.add_argument("--rows", type=int, default=600_000, help="rows to generate (split 4:1:1 by time)")
    d.add_argument("--epochs", type=int, default=2)
    d.add_argument("--batch-size", type=int, default=256)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", default="runs/demo", help="directory for metrics.json")
    d.set_defaults(func=_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "rows", 1) < 60:
        print("adasparse: --rows must be at least 60", file=sys.stderr)
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
