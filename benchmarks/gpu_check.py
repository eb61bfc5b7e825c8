"""GPU check (one script, a few minutes on one GPU): the public config at a large batch with
bfloat16 autocast, from Parquet through Ray Data into a Ray Train GPU worker, with GPU
utilisation sampled while it trains; then ``adasparse predict --gpu`` of the test split (its
actor pool on the GPU), whose AUC is set beside the job's.

    python benchmarks/gpu_check.py                       # on a GPU machine (make TORCH_SPEC=<CUDA torch> install first)
    python benchmarks/gpu_check.py --cpu --rows 60000    # the same path on CPU, as a smoke test
    python benchmarks/gpu_check.py --sharding row_wise   # the tables sharded by rows with TorchRec (GPU)

Prints: rows, batch, samples/s of the train loop (the job's own figure), share of loop time
waiting for data, mean and peak GPU utilisation (nvidia-smi, sampled every 0.5 s), peak GPU
memory, and test AUC/GAUC so that a broken run cannot pass as a fast one; predict's rows/s and
its AUC beside the job's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path


class GpuSampler:
    """nvidia-smi utilisation and memory, sampled in a thread."""

    def __init__(self, interval: float = 0.5):
        self.interval, self.util, self.mem, self._stop = interval, [], [], threading.Event()
        self.available = shutil.which("nvidia-smi") is not None

    def _run(self):
        while not self._stop.is_set():
            r = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"],
                               capture_output=True, text=True)
            if r.returncode == 0 and r.stdout.strip():
                u, m = r.stdout.splitlines()[0].split(",")
                self.util.append(float(u))
                self.mem.append(float(m))
            time.sleep(self.interval)

    def __enter__(self):
        if self.available:
            self._t = threading.Thread(target=self._run, daemon=True)
            self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self.available:
            self._t.join()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=3_000_000)
    p.add_argument("--batch-size", type=int, default=8192)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--cpu", action="store_true", help="run the same path without a GPU (smoke test)")
    p.add_argument("--sharding", default="replicated",
                   help="model.embedding.sharding: row_wise shards the tables by rows (GPUs only; needs TorchRec with "
                        "the CUDA fbgemm-gpu==1.8.0, docs/sharding.md), trained by FBGEMM's fused Adam")
    args = p.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    from pipelines.data.generate import generate
    from pipelines.serve.predict import predict
    from pipelines.runtime.ray_env import init_ray
    from pipelines.train.job_config import job_config
    from pipelines.train.driver import run

    tmp = Path(tempfile.mkdtemp(prefix="adasparse-gpu-check-"))
    init_ray("local")
    t0 = time.perf_counter()
    generate(str(tmp / "data"), rows=args.rows, seed=0)
    gen_s = time.perf_counter() - t0
    # the public config (§4.1): DNN {128, 64, 32}, AdaSparse Fusion with the paper's defaults
    job = job_config({"data": str(tmp / "data" / "spec.yaml"), "model.kind": "adasparse", "model.pruner.formulation": "fusion",
                      "model.embedding.sharding": args.sharding,
                      "resources.workers": 1, "resources.gpu": not args.cpu, "train.epochs": args.epochs,
                      "train.batch_size": args.batch_size, "output.dir": str(tmp / "runs"), "output.name": "gpu-check"})
    with GpuSampler() as gpu:
        final = run(job, log=lambda s: None)
    pred = predict(str(tmp / "runs" / "gpu-check"), str(tmp / "data" / "spec.yaml"), str(tmp / "predictions"),
                   split="test", gpu=not args.cpu, log=lambda s: None)
    h = final["history"][-1]
    report = {
        "device": "cpu" if args.cpu else "cuda (bfloat16 autocast)",
        "sharded_tables": final.get("sharded_tables"),
        "rows_generated": args.rows, "generate_s": round(gen_s, 1), "batch_size": args.batch_size,
        "train_samples_per_s": round(final["samples_per_s"]),
        "data_wait_share": round(h["data_wait_s"] / h["train_s"], 3),
        "gpu_util_mean_pct": round(sum(gpu.util) / len(gpu.util), 1) if gpu.util else None,
        "gpu_util_peak_pct": max(gpu.util) if gpu.util else None,
        "gpu_mem_peak_mib": max(gpu.mem) if gpu.mem else None,
        "test_auc": round(final["test"]["auc"], 4), "test_gauc": round(final["test"]["gauc"], 4),
        "wall_s": round(final["wall_s"], 1),
        "predict_rows": pred["rows"], "predict_rows_per_s": round(pred["rows_per_s"]),
        "predict_auc": round(pred.get("auc", float("nan")), 4),
        # the job evaluates under its autocast (bfloat16 on a GPU), predict in float32: near, not equal
        "predict_auc_minus_job": round(pred.get("auc", float("nan")) - final["test"]["auc"], 6),
    }
    print(json.dumps(report, indent=2))
    import ray

    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
