"""The ``adasparse`` command line (the application layer; the model library has none).

Each subcommand's module is imported only when it runs, so ``adasparse demo --in-memory``
never imports Ray. ``train``, ``tune`` and ``compare`` own their options (:mod:`pipelines.train.job_flags`).
Every command ends through :func:`pipelines.runtime.exit_status.run_command`: bad input is one line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipelines.runtime.exit_status import exit_process, run_command

# the README's first command: 2M rows, 2 workers (docs/training.md has its measured time)
DEMO_ROWS = 2_000_000
DEMO_BATCH = 512


def _demo(args: argparse.Namespace) -> int:
    if args.in_memory:  # the model library alone: one process, no Ray
        from adasparse.experiment import demo, set_threads

        set_threads()
        demo(Path(args.out), rows=args.rows, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed)
        return 0
    from pipelines.demo import run_demo

    run_demo(args.out, rows=args.rows, epochs=args.epochs, batch_size=args.batch_size, workers=args.workers,
             seed=args.seed, address=args.address)
    return 0


def _generate(args: argparse.Namespace) -> int:
    from pipelines.data.dataset_writer import prepare_dataset_dir
    from pipelines.data.generate import check_generate_args, generate
    from pipelines.runtime.ray_env import init_ray

    check_generate_args(args.rows, args.domains, args.chunk_rows, args.preset)  # before Ray starts
    if not args.overwrite:
        prepare_dataset_dir(args.out, overwrite=False)  # an existing dataset: refused before Ray starts
    init_ray(args.address)
    res = generate(args.out, rows=args.rows, domains=args.domains, seed=args.seed, chunk_rows=args.chunk_rows,
                   preset=args.preset, overwrite=args.overwrite)
    print(
        f"wrote {res['rows']:,} rows ({res['files']} shards, {res['domains']} domains, CTR {res['ctr']:.2%}) "
        f"to {args.out}; spec: {args.out.rstrip('/')}/spec.yaml"
    )
    return 0


def _convert(args: argparse.Namespace) -> int:
    from adasparse.config import ConfigError

    if args.dataset == "movielens":
        from pipelines.data.convert_movielens import convert, parse_domains

        res = convert(args.input, args.out, positive_rating=args.positive_rating, domains=parse_domains(args.domains),
                      shard_rows=args.shard_rows, overwrite=args.overwrite)
        print(f"converted {res['layout']}: {res['rows']:,} ratings ({res['positives']:,} with rating >= "
              f"{args.positive_rating:g}) into {res['files']} shards under {args.out}; domains: {', '.join(res['domains'])}; "
              f"spec: {args.out.rstrip('/')}/spec.yaml")
        return 0
    from pipelines.data.convert_ijcai18 import convert

    for flag, value, default in (("--positive-rating", args.positive_rating, 4.0), ("--domains", args.domains, None)):
        if value != default:
            raise ConfigError(f"{flag}: only for convert movielens")
    res = convert(args.input, args.out, shard_rows=args.shard_rows, overwrite=args.overwrite)
    print(f"converted {res['rows']:,} rows into {res['files']} shards under {args.out}; spec: {args.out.rstrip('/')}/spec.yaml")
    return 0


def _analyze(args: argparse.Namespace) -> int:
    from pipelines.analysis.analyze import analyze

    analyze(args.runs, args.out, bins=args.bins, layer=args.layer, top=args.top, min_test_rows=args.min_test_rows)
    return 0


def _summary(args: argparse.Namespace) -> int:
    import json

    from pipelines.runtime.ray_env import init_ray
    from pipelines.data.sources import open_source
    from pipelines.data.spec import load_spec
    from pipelines.analysis.domain_summary import domain_summary

    source = open_source(load_spec(args.data))
    init_ray(args.address)
    s = domain_summary(source, top=args.top)
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    print(f"rows {s['rows']:,}  clicks {s['clicks']:,}  CTR {s['ctr']:.3%}  domains {s['domains']:,}")
    print(
        f"long tail: top 1% of domains hold {s['rows_in_top_1pct_domains']:.1%} of rows, top 10% hold "
        f"{s['rows_in_top_10pct_domains']:.1%}; {s['domains_under_100_rows']:,} domains have < 100 rows; "
        f"median {s['median_rows_per_domain']:.0f} rows per domain"
    )
    print(f"{'domain':<30} {'rows':>12} {'CTR':>8}")
    for d in s["top_domains"]:
        print(f"{d['domain']:<30} {d['rows']:>12,} {d['ctr']:>8.3%}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from pipelines.serve.export_run import export_run

    export_run(args.run, args.out, overwrite=args.overwrite, check_rows=args.check_rows)
    return 0


def _predict(args: argparse.Namespace) -> int:
    from pipelines.serve.predict import predict

    predict(args.run, args.data, args.out, split=args.split, workers=args.workers, batch_size=args.batch_size, gpu=args.gpu,
            address=args.address, overwrite=args.overwrite, storage_endpoint=args.storage_endpoint)
    return 0


def _validate(args: argparse.Namespace) -> int:
    import time

    from pipelines.runtime.ray_env import init_ray
    from pipelines.data.sources import open_source
    from pipelines.data.spec import load_spec
    from pipelines.data.time_split import time_cuts
    from pipelines.data.validation import validate_source

    spec = load_spec(args.data)
    source = open_source(spec)  # paths, schemas and column types: before Ray starts
    init_ray(args.address)
    t0 = time.perf_counter()
    report = validate_source(source, columns=args.columns)
    problems = report.problems
    for p in problems:
        print(f"adasparse validate: {p.line()}", file=sys.stderr)
    if problems:
        print(f"adasparse validate: {len(problems)} problem{'s' if len(problems) > 1 else ''} in {report.rows:,} rows "
              f"read from {len(report.files)} files", file=sys.stderr)
        return 2
    splits = ""
    if spec.time is not None and spec.split_files is None:
        rows = time_cuts(source).rows  # an empty split is a one-line error
        splits = f"; split by time: train {rows[0]:,}, dev {rows[1]:,}, test {rows[2]:,} rows"
    print(f"{args.data}: {report.rows:,} rows in {len(report.files)} files, no problems "
          f"({args.columns} columns, {time.perf_counter() - t0:.1f} s){splits}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="adasparse", description="AdaSparse multi-domain CTR prediction")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("train", help="distributed training on Ray Train (see 'adasparse train --help')")
    sub.add_parser("tune", help="Ray Tune sweep of the training job against dev GAUC (see 'adasparse tune --help')")
    sub.add_parser("compare", help="the paper's Table 1 or 2 on a dataset: models x backbones x seeds (see 'adasparse compare --help')")
    d = sub.add_parser("demo", help="generate data, train DNN and AdaSparse (Fusion) on local Ray Train, compare them")
    d.add_argument("--rows", type=int, default=DEMO_ROWS, help="rows to generate (split 4:1:1 by time)")
    d.add_argument("--epochs", type=int, default=2)
    d.add_argument("--batch-size", type=int, default=DEMO_BATCH)
    d.add_argument("--workers", type=int, default=2, help="Ray Train workers")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", default="runs/demo", help="directory for data, runs and comparison.json")
    d.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    d.add_argument("--in-memory", action="store_true", help="the model library alone: one process, no Ray (default rows 600k)")
    d.set_defaults(func=_demo)
    _add_data_commands(sub)
    _add_run_commands(sub)
    return p


def _add_data_commands(sub) -> None:
    """``generate``, ``convert``, ``validate`` and ``summary``: commands on datasets."""
    g = sub.add_parser("generate", help="write synthetic multi-domain CTR data as Parquet shards (Ray tasks) + spec.yaml")
    g.add_argument("--rows", type=int, required=True)
    g.add_argument("--out", required=True, help="directory or s3://bucket/prefix")
    g.add_argument("--domains", type=int, help="domains (the preset's when not given: 4,000 for default and users)")
    g.add_argument("--preset", default="default", choices=["default", "grouped", "users"],
                   help="the generator (adasparse.synthetic.PRESETS): default; grouped (few flat domains, strong group "
                        "effects); users (per-user effects on user-side domains, heavy-tailed item ids)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--chunk-rows", type=int, default=250_000, help="rows per shard (one Ray task each)")
    g.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    g.add_argument("--overwrite", action="store_true", help="replace a dataset already in --out (its spec and shards)")
    g.set_defaults(func=_generate)

    c = sub.add_parser("convert", help="convert a public dataset to Parquet shards + spec.yaml")
    c.add_argument("dataset", choices=["ijcai18", "movielens"])
    c.add_argument("input", help="ijcai18: the raw file (e.g. round1_ijcai_18_train_20180301.txt); movielens: the "
                                 "directory of ml-latest(-small), ml-100k or ml-1m")
    c.add_argument("--out", required=True)
    c.add_argument("--shard-rows", type=int, default=1_000_000)
    c.add_argument("--positive-rating", type=float, default=4.0, help="movielens: the label is rating >= this")
    c.add_argument("--domains", help="movielens: the domain-aware fields, comma-separated (default: genre,decade for "
                                     "ml-latest; age_group,gender,occupation for ml-100k and ml-1m)")
    c.add_argument("--overwrite", action="store_true", help="replace a dataset already in --out (its spec and shards)")
    c.set_defaults(func=_convert)

    v = sub.add_parser("validate", help="check every file of a dataset: labels, times, numeric values, readable pages, "
                                        "non-empty splits")
    v.add_argument("--data", required=True, help="dataset spec YAML")
    v.add_argument("--columns", choices=["all", "cheap"], default="all",
                   help="all: decode every column the spec uses (finds corrupt pages anywhere); cheap: the label, time and "
                        "numeric columns, as the training job's own check does")
    v.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    v.set_defaults(func=_validate)

    s = sub.add_parser("summary", help="rows and CTR per domain, number of domains, long-tail shape")
    s.add_argument("--data", required=True, help="dataset spec YAML")
    s.add_argument("--top", type=int, default=10)
    s.add_argument("--json", action="store_true")
    s.add_argument("--address")
    s.set_defaults(func=_summary)


def _add_run_commands(sub) -> None:
    """``analyze``, ``export`` and ``predict``: commands on finished training runs."""
    a = sub.add_parser("analyze", help="the paper's domain analyses (Fig. 3 a-b) of finished runs: PNG plots and their JSON")
    a.add_argument("runs", nargs="+", help="run directories (OUT/NAME of adasparse train); the first is the baseline")
    a.add_argument("--out", required=True, help="directory for the plots and JSON")
    a.add_argument("--bins", type=int, default=5, help="domain bins of equal train rows, head to long tail")
    a.add_argument("--layer", type=int, default=0, help="pruned layer whose masks are plotted")
    a.add_argument("--top", type=int, default=20, help="largest domains in the mask plots")
    a.add_argument("--min-test-rows", type=int, default=50,
                   help="test rows a domain needs for the per-domain comparison of families (families.md)")
    a.set_defaults(func=_analyze)

    e = sub.add_parser("export", help="a finished run's model as a serving artefact: per-domain pruned sub-networks "
                                      "(domain-mode AdaSparse) or the whole model, loadable with torch alone")
    e.add_argument("run", help="run directory (OUT/NAME of adasparse train)")
    e.add_argument("--out", required=True, help="export directory (new, empty, or holding this run's export)")
    e.add_argument("--overwrite", action="store_true", help="replace an export of another model in --out")
    e.add_argument("--check-rows", type=int, default=20_000,
                   help="rows (every routed domain, unseen ones) on which the export must match the model")
    e.set_defaults(func=_export)

    r = sub.add_parser("predict", help="batch scoring on Ray Data: a finished run's model over a dataset, "
                                       "predictions as Parquet (domain key, label, probability)")
    r.add_argument("--run", required=True, help="run directory (OUT/NAME of adasparse train)")
    r.add_argument("--data", required=True, help="dataset spec YAML (the run's fields)")
    r.add_argument("--split", choices=["train", "dev", "test", "all"], default="test")
    r.add_argument("--out", required=True, help="directory or s3://bucket/prefix for the Parquet predictions")
    r.add_argument("--workers", type=int, default=None,
                   help="CPU: at most this many scoring tasks at once, one CPU each (default: every CPU of the cluster); "
                        "--gpu: scoring actors, one GPU and one copy of the model each (default: every GPU)")
    r.add_argument("--batch-size", type=int, default=4096)
    r.add_argument("--gpu", action="store_true", help="one GPU per scoring actor")
    r.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    r.add_argument("--overwrite", action="store_true", help="replace predictions already in --out")
    r.add_argument("--storage-endpoint", help="S3-compatible endpoint URL for an s3:// --out (default: AWS)")
    r.set_defaults(func=_predict)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:  # the Ray Train job owns its options (pipelines/train/driver.py)
        from pipelines.train.driver import main as train_main

        return train_main(argv[1:])
    if argv[:1] == ["tune"]:  # so does the sweep (pipelines/sweep/tune.py)
        from pipelines.sweep.tune import main as tune_main

        return tune_main(argv[1:])
    if argv[:1] == ["compare"]:  # and the comparison (pipelines/sweep/compare.py)
        from pipelines.sweep.compare import main as compare_main

        return compare_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "demo" and args.rows < 60:
        print("adasparse: --rows must be at least 60", file=sys.stderr)
        return 2
    return run_command(f"adasparse {args.command}", lambda: args.func(args))


def entry_point() -> None:
    """The ``adasparse`` console script: :func:`main`, ending the process by its status."""
    exit_process(main())


if __name__ == "__main__":
    entry_point()
