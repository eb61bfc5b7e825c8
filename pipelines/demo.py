"""The main job's demo (the README's first command): generated data → Ray Train → comparison.

Generates ``rows`` rows of synthetic multi-domain data as Parquet shards on local Ray (kept
under ``OUT/data`` and reused while rows and seed match), trains the plain DNN and AdaSparse
(Fusion) with the distributed job (:func:`pipelines.train.driver.run`, ``workers`` Ray Train
workers, both with the same epochs, batch size and learning rate), and prints their test
LogLoss / AUC / GAUC side by side. Everything is written under ``OUT``: one directory per
model (``metrics.json``, checkpoints) and ``comparison.json``.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from adasparse.host import write_text_atomic

# (run name, model options): the plain DNN and AdaSparse (Fusion) on it
MODELS = (("dnn", {"model.kind": "plain", "model.backbone": "dnn"}),
          ("adasparse-fusion", {"model.kind": "adasparse", "model.pruner.formulation": "fusion"}))


def _dataset(out: Path, rows: int, seed: int, log) -> str:
    from pipelines.data.generate import generate

    data = out / "data"
    marker = data / "generated.json"
    want = {"rows": rows, "seed": seed}
    if marker.exists() and json.loads(marker.read_text()) == want:
        log(f"reusing {rows:,} generated rows in {data}")
    else:
        if data.exists():
            shutil.rmtree(data)
        t0 = time.perf_counter()
        res = generate(str(data), rows=rows, domains=4000, seed=seed)
        log(f"generated {res['rows']:,} rows ({res['domains']:,} domains, CTR {res['ctr']:.2%}) in "
            f"{time.perf_counter() - t0:.0f} s -> {data}")
        write_text_atomic(marker, json.dumps(want))
    return str(data / "spec.yaml")


def run_demo(out: str, rows: int, epochs: int, batch_size: int, workers: int, seed: int, address: str | None = None,
             log=print) -> dict:
    from pipelines.runtime.ray_env import init_ray
    from pipelines.train.job_config import job_config
    from pipelines.train.driver import run

    out_dir = Path(out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    init_ray(address)
    spec_path = _dataset(out_dir, rows, seed, log)
    results = {}
    for name, opts in MODELS:
        if (out_dir / name).exists():
            shutil.rmtree(out_dir / name)  # the demo trains afresh (a kept run name would resume instead)
        log(f"training {name} on {workers} Ray Train workers ({epochs} epochs, batch {batch_size}) ...")
        job = job_config({"data": spec_path, "train.epochs": epochs, "train.batch_size": batch_size, "train.seed": seed,
                          "resources.workers": workers, "resources.address": address, "output.dir": str(out_dir),
                          "output.name": name, **opts})
        results[name] = run(job, log=lambda s: log("  " + s))
    log("")
    log(f"{'model':<18} {'test logloss':>12} {'test AUC':>9} {'test GAUC':>9} {'best epoch':>10} {'samples/s':>10} {'wall s':>7}")
    for name, r in results.items():
        t = r["test"]
        log(f"{name:<18} {t['logloss']:>12.5f} {t['auc']:>9.4f} {t['gauc']:>9.4f} {r['best_epoch']:>10} "
            f"{r['samples_per_s']:>10,.0f} {r['wall_s']:>7.0f}")
    summary = {
        "rows": rows, "epochs": epochs, "batch_size": batch_size, "workers": workers, "seed": seed,
        "results": {n: {"test": r["test"], "dev": r["dev"], "best_epoch": r["best_epoch"], "metrics": str(out_dir / n / "metrics.json")}
                    for n, r in results.items()},
    }
    path = out_dir / "comparison.json"
    write_text_atomic(path, json.dumps(summary, indent=2))
    log(f"\nresults written to {path} (per model: {out_dir}/<model>/metrics.json)")
    return summary
