"""The domain-agnostic fields' embedding tables sharded over the workers with TorchRec.

``model.embedding.sharding`` other than ``replicated``: each domain-agnostic categorical field
gets its own table in a TorchRec ``EmbeddingBagCollection`` (one id per row and field: the
pooled bag of one row *is* the row of e_a, §3), planned by ``EmbeddingShardingPlanner`` for
the process group and wrapped in ``DistributedModelParallel``: a worker holds only its shards,
and a lookup sends each id to the worker that owns its row (all-to-all), so the exchange per
worker does not grow with the number of workers. The domain-aware fields stay in the
replicated table (:class:`adasparse.layers.embedding.FeatureEmbeddingArch`): they are few and
small (one row per domain key), every model kind reads them for its domain arch, and keeping
them local keeps STAR's and AdaSparse's domain inputs free of a collective.

The tables are trained by FBGEMM's fused optimiser in the backward pass
(``optim.sharded_tables``): Adam on GPUs (lazy, as :class:`adasparse.optim.RowAdam`, but ε
added after the bias correction: RowAdam's update with ε·√(1−β₂ᵗ)), row-wise Adagrad on CPUs,
where FBGEMM has no Adam (docs/sharding.md). The gradient each rank sends is scaled by its rows'
share of the step's rows, n_r / Σ n_r (times the world size that TorchRec's collectives divide
by, as DDP averages), so that a table row's update follows the same mean over
every worker's rows as the replicated exchange (:class:`adasparse.distributed.GradientAverager`).

The TorchRec module is kept outside the ``nn.Module`` tree (its parameters are not the dense
optimiser's, nor the dense exchange's); its local shards travel in the owning module's state
(``get_extra_state``), and :func:`gather_full` / :func:`load_weights` turn them into the whole
tables of the replicated layout and back: checkpoints and exports do not depend on the sharding
or on the number of workers. TorchRec is imported only here, and only when a run shards.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from dataclasses import dataclass

import torch
import torch.distributed as dist

from adasparse.errors import UserError

SHARDINGS = ("table_wise", "column_wise", "row_wise", "auto")
AUTO_TYPES = {False: ("table_wise", "column_wise"),  # what TorchRec's planner may choose for CPU workers
              True: ("table_wise", "column_wise", "row_wise", "table_row_wise")}  # and for GPU workers
INIT_CHUNK_ROWS = 1 << 16  # rows initialised by one seeded generator: a shard draws only the chunks it holds
INSTALL = ("pip install --no-deps torchrec==1.8.0 fbgemm-gpu-cpu==1.8.0 tensordict==0.15.3 torchmetrics==1.0.3 "
           "lightning-utilities pyre-extensions typing-inspect mypy-extensions pyvers")


@contextlib.contextmanager
def _quiet_root_logger():
    """FBGEMM logs every library it loads and every table batch it builds at INFO on the root
    logger (dozens of lines per worker): raised to WARNING meanwhile, then restored."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)


def require_torchrec():
    """The ``torchrec`` module, or a one-line error saying how to install it."""
    try:
        with _quiet_root_logger():
            import torchrec
    except ImportError as err:
        raise UserError(f"model.embedding.sharding needs TorchRec ({err}): install it with `{INSTALL}` "
                        "(`make install` does; on a GPU host the CUDA fbgemm-gpu==1.8.0)") from None
    logging.getLogger("torchrec").setLevel(logging.ERROR)  # the planner's tables of estimates
    return torchrec


@dataclass(frozen=True)
class FusedOptimizer:
    """The fused optimiser of the sharded tables: ``kind`` (``adam`` or ``rowwise_adagrad``),
    with the dense optimiser's hyper-parameters."""

    kind: str
    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    @classmethod
    def choose(cls, choice: str, device: torch.device, lr: float, betas=(0.9, 0.999), eps: float = 1e-8) -> "FusedOptimizer":
        """``choice`` (``optim.sharded_tables``) on ``device``: auto is Adam on GPUs and row-wise
        Adagrad on CPUs; Adam on a CPU is refused."""
        kind = ("adam" if device.type == "cuda" else "rowwise_adagrad") if choice == "auto" else choice
        if kind == "adam" and device.type != "cuda":
            raise UserError("optim.sharded_tables: adam is a GPU kernel of FBGEMM (its CPU kernels have none): "
                            "use rowwise_adagrad or auto on CPU workers")
        return cls(kind, lr, tuple(betas), eps)

    def fused_params(self) -> dict:
        from fbgemm_gpu.split_embedding_configs import EmbOptimType

        if self.kind == "adam":
            return {"optimizer": EmbOptimType.ADAM, "learning_rate": self.lr, "eps": self.eps,
                    "beta1": self.betas[0], "beta2": self.betas[1]}
        return {"optimizer": EmbOptimType.EXACT_ROWWISE_ADAGRAD, "learning_rate": self.lr, "eps": self.eps}


def fill_block(out: torch.Tensor, seed: int, table: str, rows: tuple[int, int], cols: tuple[int, int], dim: int,
               std: float) -> torch.Tensor:
    """Write rows ``rows`` and columns ``cols`` of table ``table``'s N(0, std) initialisation into
    ``out``, the same values whatever the sharding: each block of :data:`INIT_CHUNK_ROWS` rows has
    its own generator (seeded from ``seed``, the table and the block), so a worker draws only the
    blocks it holds, one block at a time (no copy of its shard beside it)."""
    r0, r1 = rows
    block = torch.empty(INIT_CHUNK_ROWS, dim)
    for chunk in range(r0 // INIT_CHUNK_ROWS, -(-r1 // INIT_CHUNK_ROWS)):
        key = hashlib.blake2b(f"{seed}/{table}/{chunk}".encode(), digest_size=8).digest()
        g = torch.Generator().manual_seed(int.from_bytes(key, "little") & ((1 << 63) - 1))
        lo = chunk * INIT_CHUNK_ROWS
        block.normal_(0.0, std, generator=g)
        a, b = max(r0, lo), min(r1, lo + INIT_CHUNK_ROWS)
        out[a - r0 : b - r0].copy_(block[a - lo : b - lo, cols[0] : cols[1]])
    return out


def init_block(seed: int, table: str, rows: tuple[int, int], cols: tuple[int, int], dim: int, std: float) -> torch.Tensor:
    """:func:`fill_block` into a new tensor."""
    return fill_block(torch.empty(rows[1] - rows[0], cols[1] - cols[0]), seed, table, rows, cols, dim, std)


class _ShareOfRows(torch.autograd.Function):
    """Identity forward; backward scales the gradient by ``share`` (this rank's rows / the step's)."""

    @staticmethod
    def forward(ctx, x, share: float):
        ctx.share = share
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.share, None


@dataclass(frozen=True)
class LocalShard:
    """Where a local shard sits in its table: ``table`` name, (row, column) offsets and sizes."""

    table: str
    offsets: tuple[int, int]
    sizes: tuple[int, int]


class ShardedTables:
    """``names[i]``'s table of ``buckets[i]`` rows × ``dim``, sharded over ``group`` (``sharding``:
    one of :data:`SHARDINGS`), initialised N(0, ``init_std``) by :func:`init_block` from ``seed``.

    :meth:`lookup` maps ids (B, F) to rows (B, F, dim); every rank of the group must call it the
    same number of times (a rank without rows calls :meth:`idle` instead)."""

    def __init__(self, names: list[str], buckets: list[int], dim: int, sharding: str, optimizer: FusedOptimizer, *,
                 device: torch.device, seed: int = 0, init_std: float = 0.1, group=None):
        if sharding not in SHARDINGS:
            raise UserError(f"model.embedding.sharding: {sharding!r} is not one of replicated, {', '.join(SHARDINGS)}")
        if sharding == "row_wise" and device.type != "cuda":
            raise UserError("model.embedding.sharding: row_wise is offered by TorchRec's planner for GPU workers only; "
                            "use table_wise or column_wise on CPU workers")
        require_torchrec()
        from torchrec import EmbeddingBagCollection, EmbeddingBagConfig
        from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
        from torchrec.distributed.model_parallel import DataParallelWrapper, DistributedModelParallel
        from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology

        class _DenseStaysOurs(DataParallelWrapper):
            """No DDP around the rest: the dense part keeps the job's own exchange."""

            def wrap(self, dmp, env, device) -> None:
                return None

        self.names, self.buckets, self.dim, self.sharding = list(names), list(buckets), dim, sharding
        self.group, self.device, self.optimizer = group, device, optimizer
        self.world = dist.get_world_size(group)
        tables = [EmbeddingBagConfig(name=n, embedding_dim=dim, num_embeddings=b, feature_names=[n])
                  for n, b in zip(names, buckets)]
        collection = EmbeddingBagCollection(tables=tables, device=torch.device("meta"))
        sharder = EmbeddingBagCollectionSharder(fused_params=optimizer.fused_params())
        # auto: the planner's choice among the model-parallel types only — its data_parallel would
        # leave a table replicated for a DDP wrapper that the dense part does not use
        kinds = list(AUTO_TYPES[device.type == "cuda"]) if sharding == "auto" else [sharding]
        constraints = {n: ParameterConstraints(sharding_types=kinds) for n in names}
        topology = Topology(world_size=self.world, compute_device="cuda" if device.type == "cuda" else "cpu")
        planner = EmbeddingShardingPlanner(topology=topology, constraints=constraints)
        with _quiet_root_logger():
            plan = planner.collective_plan(collection, [sharder], group or dist.GroupMember.WORLD)
            self.dmp = DistributedModelParallel(collection, device=device, plan=plan, sharders=[sharder],
                                                data_parallel_wrapper=_DenseStaysOurs())
        self.plan = {n: str(plan.plan[""][n].sharding_type) for n in names} if "" in plan.plan else {}
        with torch.no_grad():
            for shard, tensor in self._weight_shards():
                (r, c), (h, w) = shard.offsets, shard.sizes
                fill_block(tensor, seed, shard.table, (r, r + h), (c, c + w), dim, init_std)

    # -- the shards ------------------------------------------------------------------------
    def _weight_shards(self) -> list[tuple[LocalShard, torch.Tensor]]:
        """This rank's shards of the weights: where each sits, and the live tensor."""
        out = []
        for key, st in self.dmp.state_dict().items():  # embedding_bags.<table>.weight
            table = key.split(".")[-2]
            if not hasattr(st, "local_shards"):
                raise RuntimeError(f"sharded table {table}: planned as {self.plan.get(table, 'data_parallel')}, "
                                   "not sharded (no local shards)")
            for sh in st.local_shards():
                m = sh.metadata
                out.append((LocalShard(table, tuple(m.shard_offsets), tuple(m.shard_sizes)), sh.tensor))
        return out

    def _optimizer_shards(self) -> list[tuple[LocalShard, str, torch.Tensor]]:
        """This rank's shards of the fused optimiser's state: (where, which state, live tensor);
        a row-wise state (one value per row) sits at its rows' offsets, width 1."""
        out = []
        for key, per in self.dmp.fused_optimizer.state_dict()["state"].items():
            table = key.split(".")[-2]
            for name, st in per.items():
                state = name.split(".")[-1]  # <table>.momentum1 / .momentum2 / .iter
                if not hasattr(st, "local_shards"):  # not per row (a step count): not checkpointed, see docs/sharding.md
                    continue
                for sh in st.local_shards():
                    m = sh.metadata
                    offsets = tuple(m.shard_offsets) + (0,) * (2 - len(m.shard_offsets))
                    sizes = tuple(m.shard_sizes) + (1,) * (2 - len(m.shard_sizes))
                    out.append((LocalShard(table, offsets, sizes), state, sh.tensor))
        return out

    def local_bytes(self) -> int:
        """Bytes of this rank's table shards (weights only)."""
        return sum(t.numel() * t.element_size() for _, t in self._weight_shards())

    def state(self) -> dict:
        """This rank's shards (weights, then the optimiser's) as plain tensors: a copy, keyed by
        where each sits, for the owning module's state and for :func:`gather_full`."""
        weights = {_key(s): t.detach().clone() for s, t in self._weight_shards()}
        return {"weights": weights}

    def load_state(self, state: dict) -> None:
        """Copy shards saved by :meth:`state` (same sharding, same rank) back in place."""
        live = {_key(s): t for s, t in self._weight_shards()}
        missing = set(live) - set(state["weights"])
        if missing:
            raise UserError(f"the saved shards do not match this worker's ({sorted(missing)[0]} missing): "
                            "load sharded tables through their full tables (load_full)")
        with torch.no_grad():
            for k, t in live.items():
                t.copy_(state["weights"][k])

    def optimizer_state(self) -> dict:
        """This rank's shards of the fused optimiser's state (copies), keyed by where and which."""
        return {f"{_key(s)}/{name}": t.detach().clone() for s, name, t in self._optimizer_shards()}

    # -- the lookups -----------------------------------------------------------------------
    def lookup(self, ids: torch.Tensor, training: bool = False) -> torch.Tensor:
        """Rows of ``ids`` (B, F), as (B, F, dim). ``training``: the step's rows of every rank are
        summed (one small all-reduce) and this rank's gradient is scaled by B / that sum."""
        from torchrec import KeyedJaggedTensor

        b, f = ids.shape
        share = None
        if training:
            total = torch.tensor([float(b)], device=self.device)
            dist.all_reduce(total, group=self.group)
            share = b / float(total) if float(total) > 0 else 0.0
            if _divides_by_world():  # TorchRec's collectives divide the gradient by the world size (as DDP averages)
                share *= self.world
        kjt = KeyedJaggedTensor.from_lengths_sync(
            keys=self.names, values=ids.t().reshape(-1).to(self.device),
            lengths=torch.ones(b * f, dtype=torch.int32, device=self.device))
        pooled = self.dmp(kjt)
        pooled = pooled.wait() if hasattr(pooled, "wait") else pooled
        per = pooled.to_dict()  # by name: the output's column order is the sharding's, not the fields'
        rows = torch.stack([per[n] for n in self.names], dim=1)
        if share is not None and rows.requires_grad:
            rows = _ShareOfRows.apply(rows, share)
        return rows

    def idle(self, backward: bool) -> None:
        """This rank's part of a lookup it has no rows for (and of its backward, training)."""
        with torch.set_grad_enabled(backward):
            rows = self.lookup(torch.zeros(0, len(self.names), dtype=torch.int64), training=backward)
            if backward and rows.requires_grad:
                rows.sum().backward()


def _divides_by_world() -> bool:
    from torchrec.distributed.comm_ops import get_gradient_division

    return get_gradient_division()


def _key(s: LocalShard) -> str:
    return f"{s.table}@{s.offsets[0]},{s.offsets[1]}"


def _shards_of(state: dict[str, torch.Tensor]) -> list[tuple[str, int, int, torch.Tensor]]:
    out = []
    for key, t in state.items():
        where = key.split("/")[0]
        table, at = where.split("@")
        r, c = (int(x) for x in at.split(","))
        out.append((table, r, c, t if t.dim() == 2 else t.reshape(-1, 1)))
    return out


def gather_full(shards: dict[str, torch.Tensor], group=None, dst: int = 0, suffix: str | None = None,
                shapes: dict[str, tuple[int, int]] | None = None) -> dict[str, torch.Tensor] | None:
    """Every rank's ``shards`` (:meth:`ShardedTables.state`'s ``weights``, or
    :meth:`ShardedTables.optimizer_state`'s entries of one state, ``suffix``) assembled into whole
    tables on rank ``dst`` (None elsewhere); ``shapes``: each table's, else the shards' extent.
    Every value must be covered exactly once. A collective: every rank calls it."""
    mine = [(tb, r, c, t.cpu()) for tb, r, c, t in _shards_of(
        {k: v for k, v in shards.items() if suffix is None or k.endswith("/" + suffix)})]
    parts: list | None = [None] * dist.get_world_size(group) if dist.get_rank(group) == dst else None
    dist.gather_object(mine, parts, dst=dst, group=group)
    if parts is None:
        return None
    pieces = [p for part in parts for p in part]
    if shapes is None:
        shapes = {}
        for table, r, c, t in pieces:
            h, w = shapes.get(table, (0, 0))
            shapes[table] = (max(h, r + t.shape[0]), max(w, c + t.shape[1]))
    full = {name: torch.zeros(shape) for name, shape in shapes.items()}
    filled = dict.fromkeys(shapes, 0)
    for table, r, c, t in pieces:
        full[table][r : r + t.shape[0], c : c + t.shape[1]] = t
        filled[table] += t.numel()
    short = [n for n in shapes if filled[n] != full[n].numel()]
    if short:
        raise RuntimeError(f"sharded table {short[0]}: the shards gathered hold {filled[short[0]]} values "
                           f"for a table of {full[short[0]].numel()}")
    return full


def load_weights(tables: ShardedTables, full: dict[str, torch.Tensor]) -> None:
    """Whole tables (``full``: name → rows × dim) into this rank's shards, whatever sharding and
    number of workers wrote them."""
    with torch.no_grad():
        for s, t in tables._weight_shards():
            (r, c), (h, w) = s.offsets, s.sizes
            t.copy_(full[s.table][r : r + h, c : c + w])


def load_optimizer(tables: ShardedTables, state: dict[str, dict[str, torch.Tensor]]) -> None:
    """The fused optimiser's whole state (state name → table → tensor, as
    :func:`adasparse.distributed.sharded_state.portable_optimizer` gives it) into this rank's shards."""
    with torch.no_grad():
        for s, name, t in tables._optimizer_shards():
            whole = state.get(name, {}).get(s.table)
            if whole is None:
                raise UserError(f"the checkpoint has no {name} state for sharded table {s.table} "
                                f"(written with another optim.sharded_tables?)")
            (r, c), (h, w) = s.offsets, s.sizes
            whole = whole if whole.dim() == 2 else whole.reshape(-1, 1)
            t.copy_(whole[r : r + h, c : c + w].reshape(t.shape))


__all__ = ["FusedOptimizer", "INSTALL", "SHARDINGS", "ShardedTables", "fill_block", "gather_full", "init_block", "load_optimizer",
           "load_weights", "require_torchrec"]
