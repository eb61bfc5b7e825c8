"""Training-step time of AdaSparse (each formulation, both pruner modes) and of the paper's
competitors (STAR, APG, PEPNet: docs/competitors.md) against the plain backbone, on the same
batches, measured side by side in one run: the paper's complexity comparison, measured.

Setup like the issue's reference loop: 20 categorical fields × 16 dims (3 of them
domain-aware), hashed table of ``--table-rows`` rows in all, MLP 128-64-32, sparse Adam for
the table and Adam for the rest. Each variant runs ``--steps`` optimiser steps per round;
rounds interleave the variants so machine noise hits all alike. "vs plain" is the ratio of
median rounds, "paired" the median of the per-round ratios (steadier when the machine drifts).
A second table size checks that the step cost does not grow with the table.

    python benchmarks/step_time.py --batch-sizes 256,4096
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from adasparse.config import CategoricalField, FeatureConfig, ModelConfig
from adasparse.experiment import set_threads
from adasparse.layers.pruner import DOMAIN_DEDUP_MIN_ROWS
from adasparse.model import build_model
from adasparse.optim import build_optimizer
from adasparse.loop import LoopRunner

DOMAIN_CARD = (3, 8, 12)  # ~ gender × age level × star level of the public set: 288 domains


def features(table_rows: int, fields: int = 20) -> FeatureConfig:
    agnostic = fields - len(DOMAIN_CARD)
    per = max(2, (table_rows - sum(DOMAIN_CARD)) // agnostic)
    return FeatureConfig(
        domain_fields=[CategoricalField(name=f"d{i}", buckets=c) for i, c in enumerate(DOMAIN_CARD)],
        categorical_fields=[CategoricalField(name=f"c{i}", buckets=per) for i in range(agnostic)],
    )


def make_batches(feats: FeatureConfig, batch: int, count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        cols = []
        for f in feats.all_categorical:
            # Zipf-like ids: a few hot rows, a long tail, like real CTR logs
            ids = np.minimum(rng.zipf(1.2, batch) - 1, f.buckets - 1)
            cols.append(rng.permutation(f.buckets)[ids] if f.buckets <= 64 else (ids * 2654435761) % f.buckets)
        cat = torch.from_numpy(np.stack(cols, axis=1).astype(np.int64))
        label = torch.from_numpy((rng.random(batch) < 0.05).astype(np.float32))
        out.append((cat, torch.zeros(batch, 0), label))
    return out


def variants(feats: FeatureConfig, backbone: str, hidden: list[int] | None = None,
             competitors: bool = True) -> dict[str, ModelConfig]:
    base = dict(features=feats, backbone=backbone, embedding={"dim": 16}, **({"hidden_units": hidden} if hidden else {}))
    v = {f"{backbone} (plain)": ModelConfig(kind="plain", **base)}
    for mode in ("domain", "instance"):
        for form in ("binarization", "scaling", "fusion"):
            v[f"adasparse {form}/{mode}"] = ModelConfig(kind="adasparse", pruner={"formulation": form, "input": mode}, **base)
    if competitors:  # STAR and MAML with a row for every one of the 288 domains
        v["star"] = ModelConfig(kind="star", domain_slots=int(np.prod(DOMAIN_CARD)) + 1, **base)
        v["apg"] = ModelConfig(kind="apg", **base)
        v["pepnet"] = ModelConfig(kind="pepnet", **base)
        v["maml"] = ModelConfig(kind="maml", domain_slots=int(np.prod(DOMAIN_CARD)) + 1, **base)
    return v


def benchmark_model(cfg: ModelConfig):
    """A training-mode model (seeded) without the id guard: ids come from our own generator."""
    torch.manual_seed(0)
    m = build_model(cfg).train()
    if (m.star or m.maml) is not None:  # every domain-field tuple owns its row
        grids = np.meshgrid(*[np.arange(c) for c in DOMAIN_CARD], indexing="ij")
        (m.star or m.maml).index.assign(torch.from_numpy(np.stack([g.ravel() for g in grids], axis=1)))
    m.check_ids = False  # measure the model, not the guard
    return m


def time_variants(cfgs: dict[str, ModelConfig], batches, steps: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per step of every variant, one entry per round (rounds interleave the variants)."""
    return time_models({name: benchmark_model(cfg) for name, cfg in cfgs.items()}, batches, steps, rounds)


def time_models(built: dict, batches, steps: int, rounds: int) -> dict[str, list[float]]:
    """:func:`time_variants` for models already built (each gets its own optimiser)."""
    # the training job's own step (adasparse.loop: forward, objective, backward, optimiser)
    runners = {name: LoopRunner(m, build_optimizer(m), epochs=1) for name, m in built.items()}
    steps_in = [{"cat_ids": cat.numpy(), "numeric": num.numpy(), "label": lab.numpy()} for cat, num, lab in batches]
    for runner in runners.values():  # warm-up
        for b in steps_in[:3]:
            runner.step(b)
    times: dict[str, list[float]] = {n: [] for n in runners}
    for r in range(rounds):
        for name, runner in runners.items():
            t0 = time.perf_counter()
            for i in range(steps):
                runner.step(steps_in[(r * steps + i) % len(steps_in)])
            times[name].append((time.perf_counter() - t0) / steps)
    return times


def medians(rounds: dict[str, list[float]]) -> dict[str, float]:
    """The median round of every variant."""
    return {n: statistics.median(t) for n, t in rounds.items()}


def paired_ratio(times: list[float], base: list[float]) -> float:
    """Median over rounds of (variant / plain) in the same round: robust to the machine's speed
    drifting between rounds, which moves both alike."""
    return statistics.median(t / b for t, b in zip(times, base))


class _PlainContext:
    """Stands in for autograd's ctx so a fused node's forward and backward run as plain calls."""

    def save_for_backward(self, *tensors):
        self.saved_tensors = tensors

    def mark_non_differentiable(self, *tensors):
        pass


def domain_kernel_floor(model, cat_ids: torch.Tensor, dedup: bool, reps: int = 100, rounds: int = 9) -> float:
    """Seconds per step of the ``domain``-mode pruner's kernels alone, run back to back without
    autograd (no graph, no nodes, warm caches): the fused node's own forward and backward
    (:class:`RowsPrune`, or with ``dedup`` :class:`DomainPrune` on the batch's distinct domains,
    which the step uses from ``DOMAIN_DEDUP_MIN_ROWS`` rows) called as plain functions, plus
    h^l ⊙ π^l of every layer and its backward (eq. 2). What the pruner adds to a step on the same
    path cannot be less, whatever the autograd and allocation overheads."""
    from adasparse.layers.fused_pruning import FORMULATION_IDS, DomainPrune, RowsPrune

    pr = model.pruner
    c = pr.cfg
    args = (pr.widths, FORMULATION_IDS[c.formulation], model.alpha, c.beta, c.epsilon, False)
    w, b = pr.domain_proj.weight.detach(), pr.domain_proj.bias.detach()
    batch = cat_ids.shape[0]
    domain_ids = cat_ids[:, : model.embedding.num_domain_fields]
    e_d = torch.randn(batch, w.shape[1])
    hs = [torch.randn(batch, n) for n in pr.widths]
    gs = [torch.randn(batch, n) for n in pr.widths]
    g_ratio = torch.ones(len(pr.widths))

    def once():
        ctx = _PlainContext()
        if dedup:
            inverse, rep, counts = pr.unique_domains(domain_ids)
            node = DomainPrune
            out = node.forward(ctx, e_d.index_select(0, rep), w, b, inverse, counts, pr.layer_mean, *args)
        else:
            node = RowsPrune
            out = node.forward(ctx, e_d, w, b, pr.layer_mean, *args)
        factors = out[: len(hs)]
        for h, f in zip(hs, factors):
            h * f  # eq. 2 forward
        for g, f in zip(gs, factors):
            g * f  # its backward to h^l ...
        node.backward(ctx, *(g * h for g, h in zip(gs, hs)), g_ratio, None)  # ... and to π^l, through the node

    with torch.no_grad():
        for _ in range(10):
            once()
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            for _ in range(reps):
                once()
            times.append((time.perf_counter() - t0) / reps)
    return statistics.median(times)


# The step-time goals (docs/model.md "Step time"), at the paper's production batch: AdaSparse in
# domain mode within 15 % of the plain backbone's step, instance mode within 60 %; STAR within 3×
# (its per-domain rows: docs/competitors.md "Step time"). Other batch sizes are reported, not gated.
GOALS = {1024: {"adasparse fusion/domain": 1.15, "adasparse fusion/instance": 1.6, "star": 3.0}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-sizes", default="256,1024,4096", help="1024: the paper's production batch, where the goals are set")
    p.add_argument("--table-rows", type=int, default=2_000_000)
    p.add_argument("--small-table-rows", type=int, default=200_000, help="second size for the table-size check")
    p.add_argument("--backbone", default="dnn", choices=["dnn", "dcnv2"])
    p.add_argument("--hidden-units", default="128,64,32", help="MLP widths (the paper: 128,64,32 public, 512,256,128 production)")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--no-competitors", action="store_true", help="AdaSparse and the plain backbone only")
    args = p.parse_args()
    set_threads()
    hidden = [int(u) for u in args.hidden_units.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, backbone {args.backbone}, hidden units {hidden}")
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        feats = features(args.table_rows)
        batches = make_batches(feats, batch, 16)
        steps = max(8, args.steps * 256 // batch)
        cfgs = variants(feats, args.backbone, hidden, competitors=not args.no_competitors)
        rounds = time_variants(cfgs, batches, steps, args.rounds)
        res = medians(rounds)
        base = res[f"{args.backbone} (plain)"]
        floor_model = build_model(cfgs["adasparse fusion/domain"])
        print(f"\nbatch {batch}, table {args.table_rows:,} rows, median of {args.rounds} rounds × {steps} steps")
        print(f"{'variant':<30} {'ms/step':>8} {'samples/s':>10} {'vs plain':>8} {'paired':>7}")
        for name, t in res.items():
            paired = paired_ratio(rounds[name], rounds[f"{args.backbone} (plain)"])
            print(f"{name:<30} {t * 1e3:>8.2f} {batch / t:>10,.0f} {t / base:>7.2f}x {paired:>6.2f}x")
        if batch in GOALS:
            for name, goal in ((n, g) for n, g in GOALS[batch].items() if n in rounds):
                paired = paired_ratio(rounds[name], rounds[f"{args.backbone} (plain)"])
                print(f"goal at batch {batch}: {name} <= {goal:.2f}x of the plain step: paired {paired:.2f}x, "
                      f"{'met' if paired <= goal else 'NOT met'}")
        used = "de-duplicated" if batch >= DOMAIN_DEDUP_MIN_ROWS else "per row"
        for dedup in (False, True):
            floor = domain_kernel_floor(floor_model, batches[0][0], dedup, reps=max(4, 100 * 256 // batch))
            print(
                f"fusion/domain pruner kernels alone, {'de-duplicated' if dedup else 'per row'} (no autograd, warm caches): "
                f"{floor * 1e3:.2f} ms/step = {floor / base:.2f}x of the plain step (the step uses {used})"
            )
        small = features(args.small_table_rows)
        cmp = medians(time_variants(
            {"small": ModelConfig(kind="plain", features=small, backbone=args.backbone), "large": ModelConfig(kind="plain", features=feats, backbone=args.backbone)},
            make_batches(small, batch, 16),
            steps,
            args.rounds,
        ))
        print(
            f"table-size check ({args.backbone} plain): {args.small_table_rows:,} rows {cmp['small'] * 1e3:.2f} ms/step, "
            f"{args.table_rows:,} rows {cmp['large'] * 1e3:.2f} ms/step, ratio {cmp['large'] / cmp['small']:.2f}x"
        )


if __name__ == "__main__":
    main()
