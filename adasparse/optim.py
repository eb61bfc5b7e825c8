"""Optimiser: sparse (lazy) Adam for the embedding rows, Adam for everything dense.

The embedding table emits sparse gradients (only the rows of the batch), and
:class:`RowAdam` (``torch.optim.SparseAdam``'s update in fewer passes) updates only those rows and their moments: the step cost is
O(rows in the batch), independent of the table size (2M or 200M rows cost the same). This is
"lazy Adam" as in TensorFlow's LazyAdam: the moments of a row decay only when the row is
seen, which is the standard choice for CTR embedding tables (dense Adam over a large table
costs a step proportional to the table: docs/model.md "Optimiser" has the figures).
Dense parameters (backbone, pruner, numeric vectors) keep exact ``torch.optim.Adam`` semantics,
run by its fused implementation (one kernel per parameter on CPU and CUDA instead of ~10; the
same update up to float rounding order; measured in docs/model.md).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from adasparse.config import OptimConfig


WIDE_ROW = 512  # floats per row from which the rows are updated in place, each row a view (STAR's per-domain rows)
MAX_VIEW_ROWS = 4096  # at most this many rows that way (a view per row costs Python time)


class RowAdam(torch.optim.Optimizer):
    """``torch.optim.SparseAdam``'s update — lazy Adam on the rows of a sparse gradient, ε added
    to √v before the bias corrections (step size lr·√(1−β₂ᵗ)/(1−β₁ᵗ)) — in fewer passes over
    the rows. A gradient that is already one entry per row (STAR's
    :class:`adasparse.layers.star_kernels.DomainRows`, the exchange's summed rows) is not
    coalesced again. Wide rows (STAR's: ~52k floats each) are updated in place by PyTorch's
    fused Adam kernel, one view per row, in one pass; narrow ones (embedding rows) are gathered,
    updated and written back. Its state is SparseAdam's (``step``, ``exp_avg``, ``exp_avg_sq``),
    so checkpoints of either load into the other."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, maximize=False))
        self._views: dict[int, tuple] = {}  # per wide parameter: its rows and its moments' rows as views, made once

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                rows, values = _one_entry_per_row(p.grad)
                if values.numel() == 0:
                    continue
                state = self.state[p]
                if not state:
                    state.update(step=0, exp_avg=torch.zeros_like(p, memory_format=torch.preserve_format),
                                 exp_avg_sq=torch.zeros_like(p, memory_format=torch.preserve_format))
                state["step"] += 1
                wide = values[0].numel() >= WIDE_ROW and len(rows) <= MAX_VIEW_ROWS and p.dim() == 2
                if wide:
                    _rows_in_place(self._row_views(p, state), state, rows, values, group)
                else:
                    _rows_gathered(p, state, rows, values, group)
        return None

    def _row_views(self, p: torch.Tensor, state: dict) -> tuple:
        """Each row of ``p`` and of its moments as a view, made again only when a tensor was
        replaced (a loaded state)."""
        tensors = (p, state["exp_avg"], state["exp_avg_sq"])
        key = tuple((t.data_ptr(), tuple(t.shape)) for t in tensors)
        cached = self._views.get(id(p))
        if cached is None or cached[0] != key:
            cached = (key, *(t.unbind(0) for t in tensors))
            self._views[id(p)] = cached
        return cached[1:]


def _one_entry_per_row(grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, values) of a sparse gradient, one entry per row. A gradient whose rows are already
    distinct is taken as it is (autograd drops the coalesced mark when it stores a gradient;
    STAR's :class:`adasparse.layers.star_kernels.DomainRows` gives distinct rows in its own
    order): checked by sorting the row ids (few, for such gradients), not by moving the values."""
    if not grad.is_coalesced():
        rows = grad._indices()[0]
        if rows.numel() <= MAX_VIEW_ROWS and torch.unique(rows).numel() == rows.numel():
            return rows, grad._values()
        grad = grad.coalesce()
    return grad._indices()[0], grad._values()


def _rows_gathered(p, state, rows, values, group) -> None:
    """SparseAdam's update of ``rows``: the moments gathered, updated and written back."""
    beta1, beta2 = group["betas"]
    t = state["step"]
    m = state["exp_avg"].index_select(0, rows).lerp_(values, 1 - beta1)  # β₁m + (1−β₁)g
    v = state["exp_avg_sq"].index_select(0, rows).mul_(beta2).addcmul_(values, values, value=1 - beta2)
    state["exp_avg"].index_copy_(0, rows, m)
    state["exp_avg_sq"].index_copy_(0, rows, v)
    step_size = group["lr"] * math.sqrt(1 - beta2**t) / (1 - beta1**t)
    p.index_add_(0, rows, m.div_(v.sqrt_().add_(group["eps"])), alpha=-step_size)


def _rows_in_place(views, state, rows, values, group) -> None:
    """The same update by the fused Adam kernel on a view of each row (``views``: the rows of the
    parameter and of its two moments). The kernel adds ε after dividing √v by √(1−β₂ᵗ);
    SparseAdam adds it before: ε/√(1−β₂ᵗ) makes them one formula."""
    beta1, beta2 = group["betas"]
    t = state["step"]
    ids = rows.tolist()
    params, avgs, sqs = views
    step = torch.full((), float(t), dtype=torch.float32, device=values.device)
    torch._fused_adam_([params[i] for i in ids], list(values.unbind(0)), [avgs[i] for i in ids], [sqs[i] for i in ids], [],
                       [step] * len(ids), lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=0.0,
                       eps=group["eps"] / math.sqrt(1 - beta2**t), amsgrad=False, maximize=False)


class CTROptimizer:
    """Two optimisers stepped together, with one ``state_dict`` for checkpoints."""

    def __init__(self, model: torch.nn.Module, cfg: OptimConfig | None = None):
        cfg = cfg or OptimConfig()
        sparse, dense = [], []
        for module in model.modules():
            if isinstance(module, torch.nn.Embedding) and module.sparse:
                sparse.append(module.weight)
        sparse_ids = {id(p) for p in sparse}
        dense = [p for p in model.parameters() if p.requires_grad and id(p) not in sparse_ids]
        self.sparse = (
            RowAdam(sparse, lr=cfg.embedding_lr or cfg.lr, betas=cfg.betas, eps=cfg.eps)
            if sparse
            else None
        )
        self.dense = torch.optim.Adam(dense, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=bool(dense))

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [o for o in (self.sparse, self.dense) if o is not None]

    def zero_grad(self) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=True)

    def step(self) -> None:
        for o in self.optimizers:
            o.step()

    def state_dict(self) -> dict[str, Any]:
        return {"sparse": None if self.sparse is None else self.sparse.state_dict(), "dense": self.dense.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.sparse is not None:
            self.sparse.load_state_dict(state["sparse"])
        self.dense.load_state_dict(state["dense"])


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig | None = None) -> CTROptimizer:
    return CTROptimizer(model, cfg)
