"""Serving speed of an exported domain-mode AdaSparse model, side by side in one run (issue 18):

  (1) trained  — the trained model with its pruner (the evaluation forward as one program)
  (2) masked   — the whole network with each domain's stored factors, no pruner
  (3) pruned   — the export's per-domain sub-network (router + the kept neurons only)
  (4) plain    — the plain DNN of the same widths

from encoded ids to logits, all in eager PyTorch on the same kernels: (3) is the export's own
runtime (router, sub-network cut from the weights and cached, run as tensor code), (1), (2) and
(4) the fastest way to run them (a ``torch.export`` program adds ~50-100 µs of per-call input
checks, more than a one-row request's arithmetic). Sub-networks are cut before timing (a warm
server); the first cut of each is timed separately. A request scores N candidates for one user, so with user-side domain keys it is one
domain (drawn by train rows); "mixed" batches hold rows of many domains (offline scoring: the
router groups them by sub-network). Requests interleave the variants so machine noise hits all
alike; per request p50/p99 latency, and rows/s. Models: Fusion, DNN 128-64-32, trained in
memory on generated data for each sparsity boundary [r_min, r_max] of ``--boundaries``.

    python benchmarks/serving.py --boundaries 0.15:0.25,0.5:0.6 --sizes 1,512
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import numpy as np
import torch

from adasparse.config import ModelConfig
from adasparse.experiment import set_threads, synthetic_splits
from adasparse.export import check_rows_for, write_export
from adasparse.loop import InMemoryRunner
from adasparse.model import build_model, layer_sparsity
from adasparse.optim import build_optimizer
from adasparse.portable.runtime import load, tower_logits
from adasparse.synthetic import SyntheticSpec

VARIANTS = ("trained", "masked", "pruned", "plain")


def train(splits, r: tuple[float, float], epochs: int, seed: int, kind: str = "adasparse"):
    torch.manual_seed(seed)
    cfg = ModelConfig(kind=kind, features=splits.features, hidden_units=[128, 64, 32], embedding={"dim": 16},
                      pruner={"formulation": "fusion", "input": "domain", "r_min": r[0], "r_max": r[1]})
    model = build_model(cfg, splits.vocabulary)
    if kind == "adasparse":
        InMemoryRunner(model, build_optimizer(model), {"train": splits.train, "dev": splits.dev, "test": splits.test},
                       epochs=epochs, batch_size=512).fit()
    return model.eval()


class Variants:
    """The four scorers of one trained model, each from encoded (ids, numerics) to logits."""

    def __init__(self, model, plain, vocab, export_dir: str):
        self.served = load(export_dir)
        self.router = self.served.router
        self.model, self.plain_model = model, plain
        t = self.router.t
        self.full = [(t[f"deep{i}.w"], t[f"deep{i}.b"]) for i in range(len(model.backbone.deep.layers))]
        self.widths = model.pruned_widths

    def trained(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        return self.model(cat, num).logits

    def plain(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        return self.plain_model(cat, num).logits

    def masked(self, cat: np.ndarray, num: np.ndarray) -> np.ndarray:
        """The whole tower with each row's stored domain factors (nothing removed, no pruner)."""
        t, r = self.router.t, self.router
        with torch.inference_mode():
            x = r.embed(torch.from_numpy(cat), torch.from_numpy(num))
            _, domain = r.route(self.served.encoder.keys(cat))
            pi = t["factors"].index_select(0, torch.from_numpy(domain)).split(self.widths, dim=1)
            args = [a for (w, b), p in zip(self.full, pi) for a in (w, b, p)]
            return tower_logits(x, args + [t["logit.w"], t["logit.b"]], False, 0, len(self.full)).numpy()

    def run(self, name: str, cat: np.ndarray, num: np.ndarray) -> np.ndarray:
        if name == "pruned":
            return self.served.logits_of_ids(cat, num)
        if name == "masked":
            return self.masked(cat, num)
        with torch.inference_mode():
            return getattr(self, name)(torch.from_numpy(cat), torch.from_numpy(num)).numpy()


def requests(vocab, model, sizes: list[int], count: int, mixed_rows: int, seed: int) -> dict:
    """Per size, ``count`` single-domain requests (domain drawn by train rows); ``mixed``: batches
    of rows of many domains."""
    rng = np.random.default_rng(seed)
    p = vocab.train_key_rows / vocab.train_key_rows.sum()
    out = {}
    for n in sizes:
        reqs = []
        for _ in range(count):
            cat, num = check_rows_for(model, vocab, n, seed=int(rng.integers(1 << 30)))
            cat, num = cat[-n:], num[-n:]  # random rows: their other fields and numerics
            cat[:, : len(vocab.fields)] = vocab.train_ids[rng.choice(len(p), p=p)]
            reqs.append((cat, num))
        out[str(n)] = reqs
    reqs = []
    for _ in range(max(3, count // 20)):
        cat, num = check_rows_for(model, vocab, mixed_rows, seed=int(rng.integers(1 << 30)))
        idx = rng.choice(len(p), size=mixed_rows, p=p)
        cat, num = cat[-mixed_rows:], num[-mixed_rows:]
        cat[:, : len(vocab.fields)] = vocab.train_ids[idx]
        reqs.append((cat, num))
    out[f"mixed {mixed_rows}"] = reqs
    return out


def measure(v: Variants, reqs: list, warmup: int = 5) -> dict[str, dict]:
    times = {name: [] for name in VARIANTS}
    for i, (cat, num) in enumerate(reqs):
        order = VARIANTS[i % 4:] + VARIANTS[: i % 4]
        for name in order:
            t0 = time.perf_counter()
            v.run(name, cat, num)
            dt = time.perf_counter() - t0
            if i >= warmup or len(reqs) <= warmup:
                times[name].append(dt)
    rows = len(reqs[0][0])
    out = {}
    for name, ts in times.items():
        ts = sorted(ts)
        out[name] = {"p50_ms": 1e3 * statistics.median(ts), "p99_ms": 1e3 * ts[min(len(ts) - 1, int(0.99 * len(ts)))],
                     "rows_per_s": rows * len(ts) / sum(ts)}
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=200_000, help="generated rows (split 4:1:1) the models train on")
    ap.add_argument("--domains", default="3,8,12", help="domain fields' cardinalities (the public set: 288 domains)")
    ap.add_argument("--boundaries", default="0.15:0.25,0.5:0.6", help="r_min:r_max of each trained model")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--sizes", default="1,512", help="candidates per single-domain request")
    ap.add_argument("--requests", type=int, default=300, help="requests per size")
    ap.add_argument("--mixed-rows", type=int, default=4096, help="rows of a mixed-domain batch")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (one per serving worker)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the figures here")
    a = ap.parse_args(argv)
    spec = SyntheticSpec(domain_cardinalities=tuple(int(c) for c in a.domains.split(",")))
    splits = synthetic_splits(spec, a.rows, seed=a.seed)
    sizes = [int(s) for s in a.sizes.split(",")]
    results = {}
    for boundary in a.boundaries.split(","):
        r = tuple(float(x) for x in boundary.split(":"))
        set_threads()
        t0 = time.perf_counter()
        model = train(splits, r, a.epochs, a.seed)
        plain = train(splits, r, a.epochs, a.seed, kind="plain")
        ids = torch.from_numpy(splits.vocabulary.train_ids)
        sparsity = layer_sparsity(model.domain_masks(ids))
        with tempfile.TemporaryDirectory() as d:
            man = write_export(model, splits.vocabulary, f"{d}/export", missing_values=[-1])
            torch.set_num_threads(a.threads)
            v = Variants(model, plain, splits.vocabulary, f"{d}/export")
            t1 = time.perf_counter()
            for g in range(man["pruned"]["masks"]):  # a warm server: every sub-network cut once
                v.router.subnetwork(g)
            cut_ms = 1e3 * (time.perf_counter() - t1) / max(1, man["pruned"]["masks"])
            reqs = requests(splits.vocabulary, model, sizes, a.requests, a.mixed_rows, a.seed)
            res = {name: measure(v, rq) for name, rq in reqs.items()}
        p = man["pruned"]
        results[boundary] = {"sparsity": sparsity, "masks": p["masks"], "domains": p["domains"],
                             "kept_neurons": p["kept_neurons"], "full_neurons": sum(p["full_widths"]), "cut_ms": cut_ms, "requests": res}
        print(f"\nboundary [{r[0]}, {r[1]}]: sparsity per layer {', '.join(f'{s:.2f}' for s in sparsity)}; "
              f"{p['domains']} domains, {p['masks']} distinct masks, kept neurons {p['kept_neurons']['min']}-"
              f"{p['kept_neurons']['max']} of {sum(p['full_widths'])}; first cut of a sub-network {cut_ms:.2f} ms  "
              f"(trained and exported in {time.perf_counter() - t0:.0f} s)")
        print(f"{'request':<12} {'variant':<8} {'p50 ms':>8} {'p99 ms':>8} {'rows/s':>11} {'vs trained':>10} {'vs plain':>9}")
        for name, figs in res.items():
            for var in VARIANTS:
                f = figs[var]
                print(f"{name:<12} {var:<8} {f['p50_ms']:>8.3f} {f['p99_ms']:>8.3f} {f['rows_per_s']:>11,.0f} "
                      f"{f['rows_per_s'] / figs['trained']['rows_per_s']:>9.2f}x {f['rows_per_s'] / figs['plain']['rows_per_s']:>8.2f}x")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return results


if __name__ == "__main__":
    main()
