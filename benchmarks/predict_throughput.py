"""``adasparse predict`` (Ray Data, an actor pool) against a single-process loop over the same
rows, side by side in one run (issue 18's goal: at least 0.8× the loop's rows/s per core used).

The loop reads each shard with pyarrow, keeps the split's rows, encodes them with the training
job's encoder and the run's vocabulary, scores them in batches of ``--batch-size`` with one
PyTorch thread, and writes Parquet (domain, label, probability): the same work as ``predict``
in one process on one core. ``predict`` runs with ``--workers`` scoring actors on the local Ray
of ``--cpus`` CPUs (its readers and encoders take the rest); "per core" divides its rows/s by
the CPUs it was given. Both score the same split of the same run; the rows and the AUC of both
are printed so the work is seen to be equal. A second ``predict`` of a smaller split separates
its steady rate from its fixed cost per call.

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
    from pipelines.reading import keep_split, split_bounds
    from pipelines.run_files import RunFiles
    from pipelines.sources import open_source
    from pipelines.spec import load_spec
    from pipelines.time_split import time_cuts
    from pipelines.transforms import encode_table

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


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default="runs/demo/adasparse-domain", help="a finished run (OUT/NAME of adasparse train)")
    ap.add_argument("--data", default="runs/demo/data/spec.yaml", help="the data spec to score")
    ap.add_argument("--split", default="all")
    ap.add_argument("--small-split", default="dev",
                    help="a smaller split also predicted: the difference of the two runs gives predict's steady rate "
                         "and its fixed cost per call (actor start, model load, planning)")
    ap.add_argument("--workers", type=int, default=1, help="predict's scoring actors")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray predict runs on")
    ap.add_argument("--batch-size", type=int, default=4096)
    a = ap.parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    from pipelines.predict import predict
    from pipelines.ray_env import init_ray

    with tempfile.TemporaryDirectory() as d:
        base = loop(a.run, a.data, a.split, f"{d}/loop", a.batch_size)
        init_ray("local", num_cpus=a.cpus)
        try:
            predict(a.run, a.data, f"{d}/predict", split=a.split, workers=a.workers, batch_size=a.batch_size,
                    log=lambda s: None)  # the first call starts Ray Data's workers and imports: not timed
            res = predict(a.run, a.data, f"{d}/predict", split=a.split, workers=a.workers, batch_size=a.batch_size,
                          overwrite=True, log=lambda s: None)
            small = predict(a.run, a.data, f"{d}/predict", split=a.small_split, workers=a.workers,
                            batch_size=a.batch_size, overwrite=True, log=lambda s: None)
        finally:
            ray.shutdown()
    per_core = res["rows_per_s"] / a.cpus
    print(f"{'':<32} {'rows':>10} {'wall s':>8} {'rows/s':>10} {'per core':>10} {'AUC':>8}")
    print(f"{'single-process loop (1 core)':<32} {base['rows']:>10,} {base['wall_s']:>8.2f} {base['rows_per_s']:>10,.0f} "
          f"{base['rows_per_s']:>10,.0f} {base['auc']:>8.4f}")
    print(f"{f'predict ({a.workers} actor, {a.cpus} CPUs)':<32} {res['rows']:>10,} {res['wall_s']:>8.2f} "
          f"{res['rows_per_s']:>10,.0f} {per_core:>10,.0f} {res['auc']:>8.4f}")
    print(f"predict per core / loop: {per_core / base['rows_per_s']:.2f}x   predict / loop: "
          f"{res['rows_per_s'] / base['rows_per_s']:.2f}x")
    steady = (res["rows"] - small["rows"]) / max(res["wall_s"] - small["wall_s"], 1e-9)
    fixed = small["wall_s"] - small["rows"] / steady
    print(f"predict steady rate (the {a.split} split's rows beyond the {a.small_split} split's, over the extra time): "
          f"{steady:,.0f} rows/s = {steady / base['rows_per_s']:.2f}x the loop, {steady / a.cpus / base['rows_per_s']:.2f}x "
          f"per core; fixed cost per call {fixed:.1f} s")
    return {"loop": base, "predict": res, "per_core_ratio": per_core / base["rows_per_s"], "steady_rows_per_s": steady,
            "fixed_s": fixed}


if __name__ == "__main__":
    main()
