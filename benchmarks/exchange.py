"""The gradient exchange at 2, 4 and 8 workers: bytes each worker sends per step, measured, beside
the cost model of :mod:`adasparse.distributed.exchange_cost`, and the exchange's step time.

Each worker count is a fresh gloo process group on loopback (``GLOO_SOCKET_IFNAME=lo``), one
process per worker and one thread each, running the training job's exchange
(:class:`adasparse.distributed.GradientAverager`, forced onto the collectives: the shared-memory
path the job takes on one host is not what a cluster does). The model is the library's default
AdaSparse on the generator's default fields (3 domain fields, 12 categorical fields, 2 numeric)
plus an ``item`` field of ``--ids`` values (10^7 by default) whose ids follow a Zipf law of
exponent ``--zipf``; every field's ids are Zipf-distributed, each worker drawing its own batches.

Measured per worker and step, in the exchange alone (a barrier first, so no worker waits for
another's backward inside it):

* **bytes sent**: the process's ``wchar`` (``/proc/self/io``: bytes it handed to write/writev,
  which gloo's TCP pairs use) across ``average()`` — exact, deterministic for the seed;
* **loopback bytes**: the ``lo`` interface's transmitted bytes over the measured steps, ÷ workers
  (a cross-check that includes TCP/IP headers, and any other traffic on loopback);
* **distinct rows** u: the rows of the table each worker's batch touches (their max over workers
  is what the all-gather pads to);
* exchange and compute milliseconds (on 2 cores shared by W processes: indicative only).

"model" is ``exchange_cost.step_bytes`` from the measured u; "E[u]" is the Zipf expectation
(``expected_distinct``), which the projection in docs/scale.md uses.

    python benchmarks/exchange.py --workers 2,4,8 --batch 4096 --steps 10
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from adasparse.config import CategoricalField, ModelConfig
from adasparse.distributed import GradientAverager
from adasparse.distributed.exchange_cost import (exchange_seconds, expected_distinct, fused_step_bytes,
                                                 scaling_efficiency, scaling_limit, sharded_step_bytes, step_bytes,
                                                 zipf_probabilities)
from adasparse.experiment import synthetic_features
from adasparse.model import build_model
from adasparse.synthetic import SyntheticSpec

HASH = 2654435761  # a prime: k ↦ k·HASH mod buckets is a bijection, scattering Zipf ranks over the table


def wchar() -> int:
    """Bytes this process has handed to write()/writev() since it started."""
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("wchar:"))


def loopback_sent() -> int:
    """Bytes the loopback interface has transmitted since boot (every process on the machine)."""
    with open("/proc/net/dev") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name.strip() == "lo":
                return int(rest.split()[8])
    return 0


def model_config(ids: int) -> ModelConfig:
    """The library's default AdaSparse on the generator's default fields plus one ``item`` field."""
    feats = synthetic_features(SyntheticSpec())
    feats = feats.model_copy(update={"categorical_fields": [*feats.categorical_fields, CategoricalField(name="item", buckets=ids)]})
    return ModelConfig(kind="adasparse", features=feats)


def field_laws(cfg: ModelConfig, ids: int, zipf: float) -> list[tuple[int, float]]:
    """(values, exponent) of every categorical field in the model's order: the generator's
    cardinalities and exponents for its fields, ``ids`` and ``zipf`` for the item field."""
    spec = SyntheticSpec()
    laws = [(c, spec.domain_zipf) for c in spec.domain_cardinalities]
    laws += [(spec.categorical_cardinality, spec.value_zipf)] * spec.num_categorical
    laws.append((ids, zipf))
    assert len(laws) == len(cfg.features.all_categorical)
    return laws


def make_batches(cfg: ModelConfig, laws, batch: int, count: int, seed: int):
    rng = np.random.default_rng(seed)
    cdfs = [np.cumsum(zipf_probabilities(n, s)) for n, s in laws]
    out = []
    for _ in range(count):
        cols = []
        for f, cdf in zip(cfg.features.all_categorical, cdfs):
            ranks = np.minimum(np.searchsorted(cdf, rng.random(batch)), len(cdf) - 1)
            cols.append((ranks * HASH) % f.buckets)
        cat = torch.from_numpy(np.stack(cols, axis=1).astype(np.int64))
        num = torch.from_numpy(rng.standard_normal((batch, len(cfg.features.numeric_fields))).astype(np.float32))
        out.append((cat, num, torch.from_numpy((rng.random(batch) < 0.05).astype(np.float32))))
    return out


def _worker(rank: int, world: int, port: int, opts: dict, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    cfg = model_config(opts["ids"])
    torch.manual_seed(0)
    model = build_model(cfg).train()
    model.check_ids = False  # ids come from our own generator
    averager = GradientAverager(model, max_rows=model.table_rows_per_step(opts["batch"]), transport="collectives")
    laws = field_laws(cfg, opts["ids"], opts["zipf"])
    batches = make_batches(cfg, laws, opts["batch"], min(opts["steps"], 8), seed=1000 + rank)
    offsets = model.embedding.offsets
    rec = {"sent": [], "distinct": [], "exchange_s": [], "compute_s": [], "transport": averager.transport,
           "dense": averager.n_dense, "dim": int(model.embedding.table.weight.shape[1]),
           "bounds": averager.bounds}  # the fused path's per-table bounds (None on the two-collective path)
    lo_before = 0
    for i in range(opts["warmup"] + opts["steps"]):
        if i == opts["warmup"]:
            dist.barrier()
            lo_before = loopback_sent()
        cat, num, label = batches[i % len(batches)]
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        model.objective(model(cat, num), label).total.backward()
        t1 = time.perf_counter()
        dist.barrier()  # the exchange's time is its own, not a wait for another worker's backward
        w0, t2 = wchar(), time.perf_counter()
        averager.average()
        t3, w1 = time.perf_counter(), wchar()
        if i >= opts["warmup"]:
            rec["sent"].append(w1 - w0)
            rec["distinct"].append(int(torch.unique(cat + offsets).numel()))
            rec["exchange_s"].append(t3 - t2)
            rec["compute_s"].append(t1 - t0)
    dist.barrier()
    rec["loopback"] = loopback_sent() - lo_before
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(rec))
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(world: int, opts: dict) -> list[dict]:
    """Every worker's record for ``world`` workers."""
    before = os.environ.get("GLOO_SOCKET_IFNAME")
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # the spawned workers inherit it; this process gets its own back
    try:
        with tempfile.TemporaryDirectory() as tmp:
            mp.spawn(_worker, args=(world, free_port(), opts, tmp), nprocs=world, join=True)
            return [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(world)]
    finally:
        if before is None:
            os.environ.pop("GLOO_SOCKET_IFNAME", None)
        else:
            os.environ["GLOO_SOCKET_IFNAME"] = before


def summarize(world: int, recs: list[dict]) -> dict:
    steps = len(recs[0]["sent"])
    u_max = [max(r["distinct"][s] for r in recs) for s in range(steps)]
    dense, dim = recs[0]["dense"], recs[0]["dim"]
    if recs[0]["bounds"] is not None:  # small exchanges: one all-gather padded to the bounds
        modelled = [fused_step_bytes(world, dense, [(b, dim) for b in recs[0]["bounds"]])] * steps
    else:
        modelled = [step_bytes(world, dense, [(u, dim)])["total"] for u in u_max]
    sent = [statistics.fmean(r["sent"][s] for r in recs) for s in range(steps)]
    return {
        "workers": world, "transport": recs[0]["transport"], "dense": dense,
        "u_mean": statistics.fmean(x for r in recs for x in r["distinct"]), "u_max": statistics.fmean(u_max),
        "sent": statistics.fmean(sent), "model": statistics.fmean(modelled),
        "loopback": statistics.fmean(r["loopback"] for r in recs) / world / steps,
        "exchange_ms": 1e3 * statistics.median(x for r in recs for x in r["exchange_s"]),
        "compute_ms": 1e3 * statistics.median(x for r in recs for x in r["compute_s"]),
    }


# the projection's links (docs/scale.md names them): one node's GPUs over NVLink 4, and across
# nodes each GPU through its own 400 Gb/s NIC (a DGX H100's eight ConnectX-7), per direction
NVLINK = (450e9, 3e-6)  # bytes/s, seconds per ring hop
NIC = (50e9, 10e-6)


def project(dense: int, u: float, dim: int, batch: int, lookups: int, rates: list[float], workers: list[int]) -> None:
    """The cost model at cluster sizes not measured: bytes, exchange time and scaling efficiency
    at a fixed per-worker ``batch`` (u rows per worker-batch) for GPUs stepping at ``rates``
    samples/s; up to 8 workers the ring runs on NVLink, beyond it on the NICs."""
    tables = [(round(u), dim)]
    print(f"\nprojection: batch {batch} per worker, u = {u:,.0f}, {dense:,} dense values; ring on NVLink "
          f"({NVLINK[0] / 1e9:.0f} GB/s, {NVLINK[1] * 1e6:.0f} µs a hop) up to 8 workers, else on 400 Gb/s NICs "
          f"({NIC[0] / 1e9:.0f} GB/s, {NIC[1] * 1e6:.0f} µs a hop)")
    print("| workers | MB sent / worker / step | sharded tables: MB | exchange ms | " + " | ".join(f"efficiency at {r / 1e6:g}M samples/s/GPU" for r in rates) + " |")
    print("|---:|---:|---:|---:|" + "---:|" * len(rates))
    for w in workers:
        bw, lat = NVLINK if w <= 8 else NIC
        cells = [f"{scaling_efficiency(w, dense, tables, batch / r, bw, lat):.2f}" for r in rates]
        sharded = sharded_step_bytes(w, dense, batch, lookups, dim) / 1e6
        print(f"| {w} | {step_bytes(w, dense, tables)['total'] / 1e6:,.1f} | {sharded:,.1f} | {1e3 * exchange_seconds(w, dense, tables, bw, lat):.2f} | "
              + " | ".join(cells) + " |")
    limits = ", ".join(f"{scaling_limit(dense, tables, batch / r, *NIC):,} workers at {r / 1e6:g}M samples/s/GPU" for r in rates)
    print(f"efficiency below 0.5 (the exchange as long as the step's compute) from: {limits}")


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", default="2,4,8", help="worker counts, comma-separated")
    ap.add_argument("--batch", type=int, default=4096, help="rows per worker and step")
    ap.add_argument("--ids", type=int, default=10_000_000, help="values of the item field")
    ap.add_argument("--zipf", type=float, default=1.1, help="the item field's Zipf exponent")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--project-rates", default="250000,1000000,2000000",
                    help="GPU step rates (samples/s per GPU) the projection assumes, comma-separated")
    args = ap.parse_args(argv)
    opts = {"batch": args.batch, "ids": args.ids, "zipf": args.zipf, "steps": args.steps, "warmup": args.warmup}
    cfg = model_config(args.ids)
    laws = field_laws(cfg, args.ids, args.zipf)
    expected = sum(expected_distinct(zipf_probabilities(n, s), args.batch) for n, s in laws)
    rows = [summarize(w, measure(w, opts)) for w in (int(x) for x in args.workers.split(","))]
    print(f"batch {args.batch} per worker, item field {args.ids:,} ids (Zipf {args.zipf}), "
          f"{len(laws)} categorical fields; E[u] = {expected:,.0f} distinct rows per worker-batch")
    print("| workers | path | dense values | u (mean / max) | bytes sent / worker / step | model | model ÷ sent "
          "| loopback / worker / step | exchange ms | compute ms |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['workers']} | {r['transport']} | {r['dense']:,} | {r['u_mean']:,.0f} / {r['u_max']:,.0f} "
              f"| {r['sent']:,.0f} | {r['model']:,.0f} | {r['model'] / r['sent']:.3f} | {r['loopback']:,.0f} "
              f"| {r['exchange_ms']:.1f} | {r['compute_ms']:.1f} |")
    project(rows[0]["dense"], expected, model_config(args.ids).embedding.dim, args.batch, len(laws),
            [float(x) for x in args.project_rates.split(",")], [8, 16, 32, 64, 128, 256, 512])
    return rows


if __name__ == "__main__":
    main()
