"""``adasparse predict`` (Ray Data) against a single-process loop over the same rows, side by
side in one run (issue 18's goal: at least 0.8× the loop's rows/s per core used).

The loop reads each shard with pyarrow, keeps the split's rows, encodes them with the training
job's encoder and the run's vocabulary, scores them in batches of ``--batch-size`` with one
PyTorch thread, and writes Parquet (domain, label, probability): the same work as ``predict``
in one process on one core. ``predict`` runs on a local Ray of ``--cpus`` CPUs with each of
``--workers`` (its CPU path: read, encode, score and write fused into one task per shard, at
most that many at once); "per core" divides its rows/s by the CPUs it used (``min(workers,
cpus)``). ``--actors`` also runs the design predict had before on CPU, built here: read and
encode tasks feeding an actor pool of scoring actors (a block only to a free actor, Ray Data's
resource reservation off), one CPU left to the readers. Every variant scores the same split of
the same run; the rows and the AUC of each are printed so the work is seen to be equal. A
second call on the first half of the shards (``--split all`` of a spec over links to them)
separates each variant's steady rate (the other half's rows over the extra time) from its fixed
cost per call.

    python benchmarks/predict_throughput.py --run runs/demo/adasparse-domain --data runs/demo/data/spec.yaml
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch


def loop(run_dir: str, spec_path: str, split: str, out: str, batch_size: int) -> dict:
    from adasparse.metrics import CTRMetrics
    from pipelines.data.splits import keep_split, split_bounds
    from pipelines.runtime.run_directory import RunFiles
    from pipelines.data.sources import open_source
    from pipelines.data.spec import load_spec
    from pipelines.data.time_split import time_cuts
    from pipelines.data.encoding import encode_table

    torch.set_num_threads(1)
    run = RunFiles(run_dir)
    model = run.load_model()
    source = open_source(load_spec(spec_path))
    lo, hi = split_bounds(source, split, time_cuts(source) if source.split_files is None and split != "all" else None)
    files, _ = source.files_for(split)
    os.makedirs(out, exist_ok=True)
    m, rows = CTRMetrics(), 0
    t0 = time.perf_counter()
    for i, f in enumerate(files):
        with source.fs.open(f, "rb") as fh:
            table = keep_split(pq.read_table(fh, columns=source.spec.columns), source.spec, lo, hi)
        enc = encode_table(table, source.spec, run.vocab)
        probs = np.empty(len(enc["label"]), np.float32)
        with torch.inference_mode():
            for s in range(0, len(probs), batch_size):
                cat = torch.from_numpy(enc["cat_ids"][s : s + batch_size])
                num = torch.from_numpy(enc["numeric"][s : s + batch_size])
                probs[s : s + batch_size] = torch.sigmoid(model(cat, num).logits).numpy()
        pq.write_table(pa.table({"domain": enc["domain"], "label": enc["label"], "probability": probs}),
                       os.path.join(out, f"part-{i:05d}.parquet"))
        rows += len(probs)
        m.update(enc["domain"], enc["label"], probs=probs)
    wall = time.perf_counter() - t0
    return {"rows": rows, "wall_s": wall, "rows_per_s": rows / wall, "auc": m.compute()["auc"]}


def half_spec(spec_path: str, out_dir: str) -> str:
    """A spec over links to the first half of ``spec_path``'s shards (a local dataset)."""
    import yaml

    from pipelines.data.sources import open_source
    from pipelines.data.spec import load_spec

    spec = load_spec(spec_path)
    if spec.is_s3 or spec.split_files is not None:
        raise SystemExit(f"{spec_path}: this benchmark needs a local dataset split by time")
    files = open_source(spec).files
    if len(files) < 2:
        raise SystemExit(f"{spec_path}: needs at least 2 shards (it has {len(files)})")
    os.makedirs(out_dir)
    for f in files[: len(files) // 2]:
        os.symlink(f, os.path.join(out_dir, os.path.basename(f)))
    with open(os.path.join(out_dir, "spec.yaml"), "w") as fh:
        yaml.safe_dump({**spec.model_dump(mode="json", exclude_none=True), "location": out_dir}, fh, sort_keys=False)
    return os.path.join(out_dir, "spec.yaml")


def predict_with_actor_pool(run_dir: str, data: str, out: str, *, split: str, workers: int, batch_size: int,
                             overwrite: bool = False, log=None) -> dict:
    """The former CPU design of ``predict``: read+encode tasks, then an actor pool of
    ``workers`` scoring actors sharing the CPUs the readers leave, then Parquet write tasks."""
    import ray

    from pipelines.serve.predict import Scorer, read_back
    from pipelines.data.reading import read_split
    from pipelines.runtime.run_directory import RunFiles
    from pipelines.serve.shared_model import SharedModel
    from pipelines.data.sources import open_source
    from pipelines.data.spec import load_spec
    from pipelines.data.time_split import time_cuts

    run = RunFiles(run_dir)
    source = open_source(load_spec(data))
    cuts = time_cuts(source) if source.split_files is None and split != "all" else None
    model_ref = ray.put(SharedModel(run.load_model()))
    t0 = time.perf_counter()
    ds = read_split(source, split, cuts, vocab=run.vocab)
    ds.context.op_resource_reservation_enabled = False
    cpus = max(0.1, min(1.0, (ray.cluster_resources().get("CPU", 1) - 1) / workers))
    scored = ds.map_batches(Scorer, fn_constructor_args=(model_ref, "cpu", batch_size), batch_size=None,
                            batch_format="pyarrow", num_cpus=cpus,
                            compute=ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=1))
    if overwrite and os.path.exists(out):
        import shutil

        shutil.rmtree(out)
    scored.write_parquet(out)
    wall = time.perf_counter() - t0
    from pipelines.runtime.output_location import OutputLocation

    rows, metrics = read_back(OutputLocation.of(out), out)
    return {"rows": rows, "wall_s": wall, "rows_per_s": rows / wall, **metrics}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default="runs/demo/adasparse-domain", help="a finished run (OUT/NAME of adasparse train)")
    ap.add_argument("--data", default="runs/demo/data/spec.yaml", help="the data spec to score")
    ap.add_argument("--workers", default="1,2", help="predict's --workers, comma-separated")
    ap.add_argument("--actors", action="store_true", help="also the former design (an actor pool of scoring actors)")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray predict runs on")
    ap.add_argument("--batch-size", type=int, default=4096)
    a = ap.parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    from pipelines.serve.predict import predict
    from pipelines.runtime.ray_env import init_ray

    variants = [("predict", w, predict) for w in map(int, a.workers.split(","))]
    if a.actors:
        variants += [("actor pool", w, predict_with_actor_pool) for w in map(int, a.workers.split(","))]
    results = []
    with tempfile.TemporaryDirectory() as d:
        base = loop(a.run, a.data, "all", f"{d}/loop", a.batch_size)
        half = half_spec(a.data, f"{d}/half")
        init_ray("local", num_cpus=a.cpus)
        try:
            for name, w, fn in variants:
                kw = dict(workers=w, batch_size=a.batch_size, overwrite=True, log=lambda s: None)
                fn(a.run, a.data, f"{d}/p", split="all", **kw)  # starts Ray Data's workers and imports: not timed
                res = fn(a.run, a.data, f"{d}/p", split="all", **kw)
                small = fn(a.run, half, f"{d}/p", split="all", **kw)
                steady = (res["rows"] - small["rows"]) / max(res["wall_s"] - small["wall_s"], 1e-9)
                used = min(w, a.cpus)
                results.append({"variant": name, "workers": w, "cores": used, **res, "steady_rows_per_s": steady,
                                "fixed_s": small["wall_s"] - small["rows"] / steady,
                                "per_core_ratio": res["rows_per_s"] / used / base["rows_per_s"],
                                "steady_per_core_ratio": steady / used / base["rows_per_s"]})
        finally:
            ray.shutdown()
    loop_rate = base["rows_per_s"]
    print(f"every row of {a.data} scored by {a.run}, local Ray of {a.cpus} CPUs; the loop: {base['rows']:,} rows in {base['wall_s']:.2f} s "
          f"= {loop_rate:,.0f} rows/s on one core, AUC {base['auc']:.4f}")
    print(f"{'':<26} {'cores':>5} {'rows':>10} {'AUC':>7} {'wall s':>7} {'rows/s':>9} {'/core×loop':>10} "
          f"{'steady/s':>9} {'/core×loop':>10} {'fixed s':>7}")
    for r in results:
        label = f"{r['variant']}, {r['workers']} worker{'s' if r['workers'] > 1 else ''}"
        print(f"{label:<26} {r['cores']:>5} {r['rows']:>10,} {r['auc']:>7.4f} {r['wall_s']:>7.2f} {r['rows_per_s']:>9,.0f} "
              f"{r['per_core_ratio']:>9.2f}x {r['steady_rows_per_s']:>9,.0f} {r['steady_per_core_ratio']:>9.2f}x {r['fixed_s']:>7.1f}")
    return {"loop": base, "variants": results}


if __name__ == "__main__":
    main()
