"""A model with sharded tables: built on the process group, and its state in the replicated layout.

Checkpoints and exports hold every table whole, in the layout of a replicated model
(``embedding.table.weight``: every field's rows, the domain-aware fields' first): a run restarts
on any number of workers and with any sharding (the tables are re-sliced on load), and
``export``, ``predict`` and ``analyze`` read a sharded run's checkpoint as any other. The cost:
the rank that writes holds one whole copy of the tables while it saves (docs/sharding.md).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from adasparse.config import OptimConfig
from adasparse.distributed.sharded_tables import FusedOptimizer, ShardedTables, gather_full, load_optimizer, load_weights
from adasparse.errors import UserError
from adasparse.layers.embedding import ShardedFeatureEmbeddingArch

TABLE = "embedding.table.weight"
SHARDS = "embedding._extra_state"


def sharded_arch(model: nn.Module) -> ShardedFeatureEmbeddingArch | None:
    emb = getattr(model, "embedding", None)
    return emb if isinstance(emb, ShardedFeatureEmbeddingArch) else None


def shard_embeddings(model: nn.Module, optim: OptimConfig, seed: int, device: torch.device, group=None) -> ShardedTables | None:
    """Build ``model``'s sharded tables on the process group (None: the model is replicated).
    Every rank of ``group`` calls it, with the same model config and ``seed``."""
    emb = sharded_arch(model)
    if emb is None:
        return None
    if not dist.is_initialized():
        raise UserError("model.embedding.sharding: sharded tables need the workers' process group (a distributed run)")
    fused = FusedOptimizer.choose(optim.sharded_tables, device, optim.embedding_lr or optim.lr, optim.betas, optim.eps)
    tables = ShardedTables(emb.agnostic, emb.agnostic_buckets(), emb.dim, model.cfg.embedding.sharding, fused,
                           device=device, seed=seed, init_std=model.cfg.embedding.init_std, group=group)
    emb.attach(tables)
    return tables


def portable_state(model: nn.Module, state: dict | None = None, group=None, dst: int = 0) -> dict | None:
    """``state`` (``model.state_dict()`` by default, or a snapshot of it, e.g. the best epoch's) in
    the replicated layout, on rank ``dst`` (None elsewhere). A collective: every rank calls it."""
    emb = sharded_arch(model)
    state = model.state_dict() if state is None else state
    if emb is None:
        return state
    shapes = {n: (b, emb.dim) for n, b in zip(emb.agnostic, emb.agnostic_buckets())}
    full = gather_full(state[SHARDS], group=group, dst=dst, shapes=shapes)
    if full is None:
        return None
    out = {k: v for k, v in state.items() if k != SHARDS}
    domain_rows = state[TABLE]
    out[TABLE] = torch.cat([domain_rows.cpu()] + [full[n].to(domain_rows.dtype) for n in emb.agnostic])
    return out


def split_portable(model: nn.Module, state: dict) -> tuple[dict, dict[str, torch.Tensor]]:
    """A replicated-layout ``state`` → (the module's state without the sharded rows, the whole
    tables by field name); a table of another size is a one-line error."""
    emb = sharded_arch(model)
    whole = state[TABLE]
    rows = emb.table.weight.shape[0]
    expected = rows + sum(emb.agnostic_buckets())
    if whole.shape[0] != expected:
        raise UserError(f"{TABLE}: {whole.shape[0]} rows, the model's fields have {expected}")
    tables, at = {}, rows
    for name, b in zip(emb.agnostic, emb.agnostic_buckets()):
        tables[name] = whole[at : at + b]
        at += b
    local = {**state, TABLE: whole[:rows], SHARDS: {}}
    return local, tables


def load_portable_state(model: nn.Module, state: dict) -> None:
    """Load a replicated-layout ``state`` (e.g. a checkpoint's) into a sharded ``model``: each
    rank takes its shards' slices, whatever sharding and number of workers wrote it."""
    if sharded_arch(model) is None:
        model.load_state_dict(state)
        return
    local, tables = split_portable(model, state)
    model.load_state_dict(local)
    load_weights(model.embedding.tables, tables)


def portable_optimizer(tables: ShardedTables, group=None, dst: int = 0) -> dict | None:
    """The fused optimiser's whole state (state name → table → tensor) on rank ``dst``."""
    mine = tables.optimizer_state()
    names = sorted({k.split("/")[1] for k in mine})
    every: list = [None] * dist.get_world_size(group)
    dist.all_gather_object(every, names, group=group)  # a rank may hold no table: take the names of all
    out = {}
    for name in sorted({n for part in every for n in part}):
        full = gather_full(mine, group=group, dst=dst, suffix=name)
        if full is not None:
            out[name] = full
    return out if dist.get_rank(group) == dst else None


__all__ = ["load_optimizer", "load_portable_state", "portable_optimizer", "portable_state", "shard_embeddings",
           "sharded_arch", "split_portable"]
