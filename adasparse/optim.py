"""Optimiser: sparse (lazy) Adam for the embedding rows, Adam for everything dense.

The embedding table emits sparse gradients (only the rows of the batch), and
``torch.optim.SparseAdam`` updates only those rows and their moments: the step cost is
O(rows in the batch), independent of the table size (2M or 200M rows cost the same). This is
"lazy Adam" as in TensorFlow's LazyAdam: the moments of a row decay only when the row is
seen, which is the standard choice for CTR embedding tables (dense Adam over a large table
costs a step proportional to the table: docs/model.md "Optimiser" has the figures).
Dense parameters (backbone, pruner, numeric vectors) keep exact ``torch.optim.Adam`` semantics,
run by its fused implementation (one kernel per parameter on CPU and CUDA instead of ~10; the
same update up to float rounding order; measured in docs/model.md).
"""

from __future__ import annotations

from typing import Any

import torch

from adasparse.config import OptimConfig


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
            torch.optim.SparseAdam(sparse, lr=cfg.embedding_lr or cfg.lr, betas=cfg.betas, eps=cfg.eps)
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
