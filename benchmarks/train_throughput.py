"""End-to-end training throughput: the Ray job (Ray Data → Ray Train workers) against a plain
single-process PyTorch loop over the same train rows already in memory, side by side in one run.

Both train the same model (AdaSparse Fusion on the DNN backbone by default) with sparse Adam
for the table. The plain loop runs one epoch (twice, see below) and uses every core for PyTorch's intra-op threads
(``torch.set_num_threads(cores)``); the Ray job runs ``--epochs`` epochs (default 2) and spreads
the same cores over its train workers and Ray Data; rows are identical (the train split,
encoded by the same :func:`pipelines.data.encoding.encode_table`). Figures:

* samples/s of the plain loop (the faster of a run before and one after the Ray job) and of
  the Ray train loop in its first epoch (which carries the job's one-time start-up:
  the first stream's first batch) and in its last (steady state), each against the plain loop;
  beside them, rows × epochs / wall time of the whole ``fit`` call (worker start-up, dev
  evaluation after every epoch, the test evaluation, checkpoints);
* where the last epoch's loop time goes (rank 0): waiting for the next batch from Ray Data,
  gradient exchange (which includes coalescing the local sparse gradient, work the plain loop
  does inside ``SparseAdam``), and the rest (forward, backward, optimiser); the exchange split
  by phase (coalesce / collective incl. waiting for the other worker / merge,
  ``GradientAverager.timings``); and the first epoch's wait for its first batch.

The Ray job's workers read their own streams of the train split (pipelines/data/train_stream.py);
the figures of Ray Data's streaming split, the reader it replaced, are kept in docs/training.md.

    python benchmarks/train_throughput.py --rows 1000000 --batch-sizes 256,8192 --workers 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch


def load_train_split(spec_path: str):
    """The train split encoded in memory (pyarrow; the domain vocabulary from the job's own
    Ray Data pass), as the plain loop's input; also the features with the vocabulary's sizes."""
    from pipelines.data.sources import open_source
    from pipelines.data.spec import load_spec
    from pipelines.data.time_split import time_cuts
    from adasparse.portable.rules import time_values
    from pipelines.data.encoding import encode_table

    from pipelines.data.vocabulary_pass import build_vocabulary

    src = open_source(load_spec(spec_path))
    cuts = time_cuts(src)
    vocab = build_vocabulary(src, cuts)
    parts = []
    for path in src.files:
        with src.fs.open(path, "rb") as fh:
            t = pq.read_table(fh, columns=src.spec.columns)
        keep = time_values(t[src.spec.time]) < cuts.train_end
        parts.append(encode_table(t.filter(pa.array(keep)), src.spec, vocab))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}, vocab.features(src.spec.features)


def plain_loop(model_cfg, data: dict, batch_size: int, seed: int = 0) -> float:
    """Samples/s of one epoch of the reference loop (shuffled rows, sparse Adam)."""
    from adasparse.experiment import set_threads
    from adasparse.model import build_model
    from adasparse.optim import build_optimizer

    set_threads()
    torch.manual_seed(seed)
    model = build_model(model_cfg).train()
    model.check_ids = False
    opt = build_optimizer(model)
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(data["label"])))
    cat, num, lab = (torch.from_numpy(data[k]) for k in ("cat_ids", "numeric", "label"))
    t0 = time.perf_counter()
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        opt.zero_grad()
        obj = model.objective(model(cat[idx], num[idx]), lab[idx])
        obj.total.backward()
        opt.step()
    return len(order) / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="dataset spec; default: generate --rows rows")
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--batch-sizes", default="256,8192")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="PyTorch threads per Ray worker (default: the job's)")
    p.add_argument("--model", default="adasparse")
    p.add_argument("--formulation", default="fusion")
    p.add_argument("--epochs", type=int, default=2, help="Ray job epochs (the last one is the steady state)")
    args = p.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    from pipelines.data.generate import generate
    from pipelines.runtime.ray_env import init_ray
    from pipelines.train.job_config import job_config
    from pipelines.train.driver import run

    tmp = Path(tempfile.mkdtemp(prefix="adasparse-bench-"))
    init_ray("local")
    spec_path = args.data
    if spec_path is None:
        generate(str(tmp / "data"), rows=args.rows, seed=0)
        spec_path = str(tmp / "data" / "spec.yaml")
    data, features = load_train_split(spec_path)
    print(f"train split: {len(data['label']):,} rows; {os.cpu_count()} cores; {args.workers} Ray Train workers")
    rows, exchange_split = [], {}
    readers = ["stream"]  # each worker's own stream, the job's one train reader
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        jobs = {r: job_config({"data": spec_path, "model.kind": args.model, "model.pruner.formulation": args.formulation,
                               "train.epochs": args.epochs, "train.batch_size": bs, "resources.workers": args.workers,
                               "resources.threads": args.threads, "output.dir": str(tmp / "runs"),
                               "output.name": f"bench-{bs}-{r}"}) for r in readers}
        model_cfg = jobs[readers[0]].model_for(features)
        before = plain_loop(model_cfg, data, bs)
        for reader, job in jobs.items():
            t0 = time.perf_counter()
            final = run(job, log=lambda _: None)
            wall = time.perf_counter() - t0
            # the reference runs before and after the Ray jobs and the faster run counts: this
            # machine's speed drifts by tens of percent within minutes, and the reference is the bar
            ref = max(before, plain_loop(model_cfg, data, bs))
            first, last = final["history"][0], final["history"][-1]
            # every worker's rows per second of rank 0's loop (the workers step together)
            rate = [h.get("rows_all_workers", h["rows"] * args.workers) / h["train_s"] for h in (first, last)]
            busy = last["train_s"]
            rows.append((bs, reader, ref, rate[0], rate[1], len(data["label"]) * args.epochs / wall, first["first_batch_s"],
                         last["data_wait_s"] / busy, last["grad_sync_s"] / busy))
            phases = last.get("grad_sync_phases_s") or {}
            if phases:
                exchange_split[(bs, reader)] = " / ".join(f"{k} {100 * v / busy:.0f}%" for k, v in phases.items())
    print(f"\n{'batch':>6} | {'reader':>15} | {'plain loop':>11} | {'Ray epoch 1':>11} | {'ratio':>5} | "
          f"{'Ray epoch ' + str(args.epochs):>11} | {'ratio':>5} | {'whole fit':>10} | {'ratio':>5} | epoch 1 first batch | "
          f"epoch {args.epochs}: wait / exchange / compute")
    for bs, reader, ref, r1, r2, whole, first_s, wait, sync in rows:
        print(f"{bs:>6} | {reader:>15} | {ref:>9,.0f}/s | {r1:>9,.0f}/s | {r1 / ref:>4.2f}x | {r2:>9,.0f}/s | {r2 / ref:>4.2f}x | "
              f"{whole:>8,.0f}/s | {whole / ref:>4.2f}x | {first_s:>17.1f} s | "
              f"{100 * wait:.0f}% / {100 * sync:.0f}% / {100 * (1 - wait - sync):.0f}%")
    print(f"gradient exchange: {final['grad_exchange']}")
    for (bs, reader), split in exchange_split.items():
        print(f"batch {bs}, {reader}, epoch {args.epochs}, the exchange's share of the loop by phase: {split}")
    import ray

    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)  # generated rows, checkpoints


if __name__ == "__main__":
    main()
