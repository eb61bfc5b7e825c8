"""Replicated against sharded (TorchRec ``table_wise``) tables, side by side in one run: bytes each
worker sends per step, step time, and the tables' memory per worker, at 2, 4 and 8 workers.

The model and batches are :mod:`benchmarks.exchange`'s (the library's default AdaSparse on the
generator's fields plus an ``item`` field of ``--ids`` values, 10^7 by default, every field's ids
Zipf-distributed, each worker its own batches); each worker count is a fresh gloo process group
on loopback, one process and one thread per worker, for each layout in turn:

* **replicated**: every table on every worker, the job's exchange (:class:`GradientAverager`
  forced onto the collectives, as on a cluster), ``RowAdam`` on the rows;
* **sharded**: the domain-agnostic tables ``table_wise`` over the workers
  (:mod:`adasparse.distributed.sharded_tables`): all-to-all lookups in forward and backward, the
  fused row-wise Adagrad; the domain-aware rows and the dense part keep the exchange.

Measured per worker and step across the whole step (forward, backward, exchange, optimiser; a
barrier first): **bytes sent** (``wchar`` of ``/proc/self/io``: bytes handed to write/writev,
which gloo's TCP pairs use — exact); **step ms** (2 cores shared by W processes: indicative
only); **table MB** (the worker's table rows and their optimiser state, exact) and peak RSS.
"model" is :func:`adasparse.distributed.exchange_cost.table_wise_step_bytes` (sharded) and
:func:`~adasparse.distributed.exchange_cost.step_bytes` (replicated) from the measured rows.

    python benchmarks/sharded_tables.py --workers 2,4,8 --batch 4096 --steps 6
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from exchange import field_laws, free_port, make_batches, model_config, wchar  # noqa: E402

from adasparse.config import OptimConfig  # noqa: E402
from adasparse.distributed import GradientAverager  # noqa: E402
from adasparse.distributed.exchange_cost import fused_step_bytes, step_bytes, table_wise_step_bytes  # noqa: E402
from adasparse.model import build_model  # noqa: E402
from adasparse.optim import build_optimizer  # noqa: E402

LAYOUTS = ("replicated", "sharded")


def _model(layout: str, ids: int):
    cfg = model_config(ids)
    if layout == "sharded":
        cfg = cfg.model_copy(update={"embedding": cfg.embedding.model_copy(update={"sharding": "table_wise"})})
    torch.manual_seed(0)
    model = build_model(cfg).train()
    model.check_ids = False  # ids come from our own generator
    tables = None
    if layout == "sharded":
        from adasparse.distributed.sharded_state import shard_embeddings

        tables = shard_embeddings(model, OptimConfig(), seed=0, device=torch.device("cpu"))
    return cfg, model, tables


def _table_bytes(model, opt, tables) -> int:
    """This worker's table rows and their optimiser state, in bytes."""
    def size(t) -> int:
        return t.numel() * t.element_size()

    weight = model.embedding.table.weight
    total = size(weight) + sum(size(v) for v in opt.sparse.state.get(weight, {}).values() if torch.is_tensor(v) and v.dim())
    if tables is not None:
        total += tables.local_bytes() + sum(size(t) for t in tables.optimizer_state().values())
    return total


def _worker(rank: int, world: int, port: int, layout: str, opts: dict, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    cfg, model, tables = _model(layout, opts["ids"])
    averager = GradientAverager(model, max_rows=model.table_rows_per_step(opts["batch"]), transport="collectives")
    opt = build_optimizer(model, OptimConfig())
    batches = make_batches(cfg, field_laws(cfg, opts["ids"], opts["zipf"]), opts["batch"], min(opts["steps"], 4), seed=1000 + rank)
    k = cfg.features.num_domain_fields
    rec = {"sent": [], "step_s": [], "domain_rows": [], "dense": averager.n_dense, "dim": cfg.embedding.dim,
           "fields": len(cfg.features.all_categorical) - k, "owned": 0 if tables is None else len(_owned(tables)),
           "transport": averager.transport, "bounds": averager.bounds}
    for i in range(opts["warmup"] + opts["steps"]):
        cat, num, label = batches[i % len(batches)]
        dist.barrier()
        w0, t0 = wchar(), time.perf_counter()
        opt.zero_grad()
        model.objective(model(cat, num), label).total.backward()
        averager.average(weight=len(label))
        opt.step()
        t1, w1 = time.perf_counter(), wchar()
        if i >= opts["warmup"]:
            rec["sent"].append(w1 - w0)
            rec["step_s"].append(t1 - t0)
            rows = cat if tables is None else cat[:, :k]
            rec["domain_rows"].append(int(torch.unique(rows + model.embedding.offsets[: rows.shape[1]]).numel()))
    rec["table_bytes"] = _table_bytes(model, opt, tables)
    rec["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(rec))
    dist.barrier()
    dist.destroy_process_group()


def _owned(tables) -> list[str]:
    """The tables whose rows this worker holds."""
    return sorted({s.table for s, _ in tables._weight_shards()})


def measure(world: int, layout: str, opts: dict) -> list[dict]:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # the spawned workers inherit it
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(world, free_port(), layout, opts, tmp), nprocs=world, join=True)
        return [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(world)]


def modelled(world: int, layout: str, rec: dict, u: int, batch: int) -> float:
    """The cost model's bytes for one worker's step (u: the most distinct rows any worker's batch
    touched in the replicated table, or in the domain-aware rows when sharded)."""
    if rec["bounds"] is not None:  # small exchanges: one all-gather padded to the bounds
        exchange = fused_step_bytes(world, rec["dense"], [(b, rec["dim"]) for b in rec["bounds"]])
    else:
        exchange = step_bytes(world, rec["dense"], [(u, rec["dim"])])["total"]
    if layout == "replicated":
        return exchange
    return exchange + table_wise_step_bytes(world, batch, rec["fields"], rec["owned"], rec["dim"])


def summarize(world: int, layout: str, recs: list[dict], batch: int) -> dict:
    steps = len(recs[0]["sent"])
    u = [max(r["domain_rows"][s] for r in recs) for s in range(steps)]
    sent = [statistics.fmean(r["sent"][s] for r in recs) for s in range(steps)]
    model = [statistics.fmean(modelled(world, layout, r, u[s], batch) for r in recs) for s in range(steps)]
    return {"workers": world, "layout": layout, "transport": recs[0]["transport"],
            "sent": statistics.fmean(sent), "model": statistics.fmean(model),
            "step_ms": 1e3 * statistics.median(x for r in recs for x in r["step_s"]),
            "table_mb_max": max(r["table_bytes"] for r in recs) / 1e6,
            "table_mb_sum": sum(r["table_bytes"] for r in recs) / 1e6,
            "rss_mb_max": max(r["peak_rss"] for r in recs) / 1e6, "rss_mb_min": min(r["peak_rss"] for r in recs) / 1e6,
            "u": statistics.fmean(u), "dense": recs[0]["dense"], "dim": recs[0]["dim"], "fields": recs[0]["fields"]}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", default="2,4,8", help="worker counts, comma-separated")
    ap.add_argument("--batch", type=int, default=4096, help="rows per worker and step")
    ap.add_argument("--ids", type=int, default=10_000_000, help="values of the item field")
    ap.add_argument("--zipf", type=float, default=1.1, help="every id field's Zipf exponent for the item field")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--layouts", default=",".join(LAYOUTS), help="replicated, sharded or both (8 replicated workers of a "
                    "10^7-id table need ~20 GB here)")
    args = ap.parse_args(argv)
    opts = {"batch": args.batch, "ids": args.ids, "zipf": args.zipf, "steps": args.steps, "warmup": args.warmup}
    rows = []
    for world in (int(x) for x in args.workers.split(",")):
        for layout in args.layouts.split(","):
            rows.append(summarize(world, layout, measure(world, layout, opts), args.batch))
            print(f"measured {layout} at {world} workers", file=sys.stderr, flush=True)
    print(f"batch {args.batch} per worker, item field {args.ids:,} ids (Zipf {args.zipf}); bytes and ms per worker and step")
    print("| workers | tables | bytes sent | model | model ÷ sent | step ms | tables + optimiser MB: largest worker "
          "| all workers | peak RSS MB: smallest / largest worker |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['workers']} | {r['layout']} | {r['sent']:,.0f} | {r['model']:,.0f} | {r['model'] / r['sent']:.3f} "
              f"| {r['step_ms']:.0f} | {r['table_mb_max']:,.0f} | {r['table_mb_sum']:,.0f} "
              f"| {r['rss_mb_min']:,.0f} / {r['rss_mb_max']:,.0f} |")
    crossover(rows, args.batch)
    return rows


def crossover(rows: list[dict], batch: int) -> None:
    """The cost model at worker counts not measured (the tables spread evenly when sharded): the
    fewest workers from which sharded tables send fewer bytes per worker than replicated ones."""
    rep = [r for r in rows if r["layout"] == "replicated"]
    if not rep:
        return
    r = rep[0]  # u per worker-batch does not depend on W: the measurement at the fewest workers
    sharded_domain = next((x["u"] for x in rows if x["layout"] == "sharded"), 0.0)

    def replicated(w: int) -> float:
        return step_bytes(w, r["dense"], [(round(r["u"]), r["dim"])])["total"]

    def sharded(w: int) -> float:
        return (step_bytes(w, r["dense"], [(round(sharded_domain), r["dim"])])["total"]
                + table_wise_step_bytes(w, batch, r["fields"], r["fields"] / w, r["dim"]))

    line = ", ".join(f"{w}: {replicated(w) / 1e6:.1f} / {sharded(w) / 1e6:.1f}" for w in (2, 4, 8, 16, 32, 64, 128))
    first = next((w for w in range(2, 4097) if sharded(w) < replicated(w)), None)
    print(f"cost model, MB per worker and step, replicated / sharded (even spread) at W workers — {line}; "
          f"sharded sends less from {first} workers (u = {r['u']:,.0f} distinct rows per worker-batch)")


if __name__ == "__main__":
    main()
