"""Single-process training and evaluation over in-memory encoded data.

The reference loop: the Ray Train job (pipelines/) runs the same step per worker, and the
benchmarks use this loop as the plain-PyTorch baseline. Model selection is by dev GAUC.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch

from adasparse.encoding import EncodedBatch
from adasparse.metrics import CTRMetrics
from adasparse.model import CTRModel
from adasparse.optim import CTROptimizer


@dataclass
class EvalResult:
    metrics: dict[str, float]
    sparsity: list[float]  # r^l per pruned layer over the evaluated rows


@dataclass
class FitResult:
    best_epoch: int
    dev: EvalResult
    history: list[dict] = field(default_factory=list)
    samples_per_s: float = 0.0


def batches(data: EncodedBatch, batch_size: int, rng: np.random.Generator | None = None) -> Iterator[tuple[torch.Tensor, ...]]:
    """(cat_ids, numeric, label, domain) tensors; shuffled when ``rng`` is given."""
    n = len(data)
    order = rng.permutation(n) if rng is not None else np.arange(n)
    cat = torch.from_numpy(data.cat_ids)
    num = torch.from_numpy(data.numeric)
    lab = torch.from_numpy(data.label) if data.label is not None else None
    for i in range(0, n, batch_size):
        idx = torch.from_numpy(order[i : i + batch_size])
        yield cat[idx], num[idx], (lab[idx] if lab is not None else None), idx


def train_step(model: CTRModel, opt: CTROptimizer, cat: torch.Tensor, num: torch.Tensor, label: torch.Tensor) -> float:
    """One update: forward, L_CTR + R_s, backward, optimiser step. Returns the total loss."""
    opt.zero_grad()
    out = model(cat, num)
    obj = model.objective(out, label)
    obj.total.backward()
    opt.step()
    return float(obj.total.detach())


@torch.no_grad()
def evaluate(model: CTRModel, data: EncodedBatch, batch_size: int = 4096) -> EvalResult:
    """LogLoss/AUC/GAUC (exact, :mod:`adasparse.metrics`) and per-layer sparsity on ``data``."""
    was = model.training
    model.eval()
    acc = CTRMetrics()
    pruned = np.zeros(len(model.pruned_widths))
    try:
        for cat, num, lab, idx in batches(data, batch_size):
            out = model(cat, num)
            acc.update(data.domain[idx.numpy()], lab.numpy(), logits=out.logits.numpy())
            if out.prune is not None:
                pruned += out.ratios.numpy() * len(idx)
    finally:
        model.train(was)
    return EvalResult(acc.compute(), list(pruned / max(len(data), 1)))


def fit(
    model: CTRModel,
    opt: CTROptimizer,
    train: EncodedBatch,
    dev: EncodedBatch,
    *,
    epochs: int,
    batch_size: int,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> FitResult:
    """Train ``epochs`` epochs, evaluate dev after each, restore the best epoch by dev GAUC."""
    rng = np.random.default_rng(seed)
    best: tuple[float, int, dict, EvalResult] | None = None
    history = []
    seen, busy = 0, 0.0
    model.train()
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        losses = []
        for cat, num, lab, _ in batches(train, batch_size, rng):
            losses.append(train_step(model, opt, cat, num, lab))
        busy += time.perf_counter() - t0
        seen += len(train)
        ev = evaluate(model, dev)
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)), **{f"dev_{k}": v for k, v in ev.metrics.items()}}
        row["sparsity"] = ev.sparsity
        history.append(row)
        if log:
            spars = " ".join(f"{r:.2f}" for r in ev.sparsity)
            log(
                f"epoch {epoch}: loss {row['train_loss']:.5f} dev logloss {ev.metrics['logloss']:.5f} "
                f"auc {ev.metrics['auc']:.4f} gauc {ev.metrics['gauc']:.4f}" + (f" sparsity [{spars}]" if spars else "")
            )
        gauc = ev.metrics["gauc"]
        if best is None or (not np.isnan(gauc) and (np.isnan(best[0]) or gauc > best[0])):
            best = (gauc, epoch, copy.deepcopy(model.state_dict()), ev)
    assert best is not None
    model.load_state_dict(best[2])
    return FitResult(best[1], best[3], history, seen / busy if busy else 0.0)
