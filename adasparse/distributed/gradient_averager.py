"""Data-parallel gradient averaging for CTR models: dense all-reduce + sparse row all-gather.

Why not ``DistributedDataParallel``: the embedding table emits sparse gradients. DDP reduces
those only through the gloo backend (NCCL has no sparse all-reduce, so DDP with a sparse
table fails on the GPU path); and one of our 2-worker CPU runs under DDP aborted a worker with
heap corruption (``malloc(): unaligned tcache chunk detected`` inside ``backward``; cause not
isolated). :class:`GradientAverager` uses only dense collectives, which every backend has,
and runs in the training thread, between ``backward`` and the optimiser step:

* dense parameters: their gradients are packed into one flat buffer, one ``all_reduce``
  (sum) per step, divided by the world size; the sparse tables' row counts ride in the same
  buffer (two collectives per step in all: each costs milliseconds over gloo);
* each sparse table: the gradient is coalesced locally (one entry per touched row), then
  rows and values travel in one ``all_gather`` padded to the largest count as a
  float32 matrix — the int64 row ids reinterpreted bit for bit as two float32 columns, so
  nothing is rounded — and every rank rebuilds the same summed sparse gradient / world size.

**One collective instead of two** when the caller gives a bound on a table's touched rows per
step (``max_rows``: batch size × lookups per row) and the whole exchange is small
(world × payload ≤ :data:`FUSED_MAX_BYTES`): dense gradients, row counts and each table's rows
padded to the bound travel in one ``all_gather`` and every rank sums the dense parts itself.
At batch 256 on two CPU workers this is one gloo round trip instead of two (figures in
docs/training.md). Large batches or many ranks keep the all-reduce, which scales.

**Shared memory instead of gloo** when every rank runs on one host with CPU tensors and a
bound is given (``transport="auto"``, the default): the same one-buffer payload goes through
:class:`adasparse.distributed.shared_memory.SharedMemoryGather` (a ``/dev/shm`` file and a loopback
barrier): gloo's latency per collective dwarfs a small step's work on CPU (docs/training.md).
``transport="collectives"`` forces the process group, ``"shared_memory"`` insists (or raises).

The result equals DDP's: every rank ends the step with the mean of the ranks' gradients
(each rank's loss is its own batch mean). **Weighted by rows** when the ranks' batches differ
(``average(weight=rows)``): each rank's gradient counts in proportion to its rows, Σ_r n_r·g_r /
Σ_r n_r — the gradient of the mean loss over every rank's rows, whatever the split; a rank
without a batch this step takes part with weight 0 (its zero gradient changes nothing) and
every rank learns the step's total rows, 0 when every rank is out of data. A flag rides along
too (summed over ranks), so the ranks decide together, at the same step, e.g. to checkpoint. Traffic per step is the touched rows only,
O(world · batch · fields · dim), never the table. Works on CPU (gloo or shared memory) and
GPU (NCCL) alike.
"""

from __future__ import annotations

import time

import torch
import torch.distributed as dist
from torch import nn

from adasparse.distributed.shared_memory import SharedMemoryGather, all_on_one_host


def _sparse_tables(model: nn.Module) -> list[nn.Parameter]:
    return [m.weight for m in model.modules() if isinstance(m, nn.Embedding) and m.sparse]


def _pack_rows(rows: torch.Tensor, values: torch.Tensor, out: torch.Tensor) -> None:
    """Rows and their gradient values into the first rows of a float32 block: the int64 row ids
    reinterpreted bit for bit as two float32 columns (nothing is rounded), then the values."""
    out[: rows.numel(), :2] = rows.contiguous().view(torch.float32).view(-1, 2)
    out[: rows.numel(), 2:] = values.float()


def _sparse_mean(p: nn.Parameter, blocks: list[torch.Tensor], sizes: list[int], total: float) -> torch.Tensor:
    """The mean sparse gradient from every rank's packed block (``sizes``: its used rows;
    ``total``: the ranks' summed weights, by which the weighted values are divided)."""
    both = torch.cat([b[:n] for b, n in zip(blocks, sizes)])
    all_rows = both[:, :2].contiguous().view(torch.int64).view(-1)
    all_values = (both[:, 2:] / total).to(p.dtype)
    return torch.sparse_coo_tensor(all_rows.unsqueeze(0), all_values, p.shape, check_invariants=False).coalesce()


# Above this many bytes received per step the fused all-gather loses to all-reduce + all-gather.
FUSED_MAX_BYTES = 4 << 20
# The shared-memory exchange's largest slot (one rank's payload); larger ones use the collectives.
SHARED_MAX_BYTES = 256 << 20
TRANSPORTS = ("auto", "shared_memory", "collectives")


class GradientAverager:
    """Call :meth:`average` after ``backward()`` and before the optimiser step on every rank.

    ``max_rows``: an upper bound, the same on every rank, on the rows one step touches in each
    sparse table (e.g. batch size × fields), or a bound per table (a mapping from the table's
    weight to its bound, e.g. :meth:`adasparse.model.CTRModel.table_rows_per_step`); it enables
    the one-collective exchange."""

    def __init__(self, model: nn.Module, group=None, max_rows: int | dict | None = None, transport: str = "auto"):
        if transport not in TRANSPORTS:
            raise ValueError(f"transport {transport!r}: expected one of {', '.join(TRANSPORTS)}")
        self.group = group
        # seconds spent per phase since the last reset_timings(): "coalesce" (this rank's sparse
        # gradient to one entry per row), "collective" (the all-reduce / all-gathers, waiting for
        # the slowest rank included), "merge" (every rank's rows and dense parts into the mean)
        self.timings = dict.fromkeys(("coalesce", "collective", "merge"), 0.0)
        self.world = dist.get_world_size(group)
        sparse = _sparse_tables(model)
        ids = {id(p) for p in sparse}
        self.sparse = sparse
        self.dense = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
        self.n_dense = sum(p.numel() for p in self.dense)  # length of the dense part of an exchange
        self.bounds: list[int] | None = None
        self.local: SharedMemoryGather | None = None
        largest = max(max_rows.values(), default=0) if isinstance(max_rows, dict) else max_rows
        if largest is None or largest >= 1 << 24 or self.world == 1:
            if transport == "shared_memory" and self.world > 1:
                raise ValueError("the shared-memory exchange needs max_rows (a bound below 2^24 on a step's table rows)")
            return
        if isinstance(max_rows, dict):  # a bound per table (a table without one: its size)
            bounds = [min(max_rows.get(p, p.shape[0]), p.shape[0]) for p in sparse]
        else:
            bounds = [min(max_rows, p.shape[0]) for p in sparse]
        payload = self.n_dense + 2 + len(sparse) + sum(b * (p.shape[1] + 2) for b, p in zip(bounds, sparse))
        on_cpu = all(p.device.type == "cpu" for p in self.dense + self.sparse)
        if transport != "collectives" and on_cpu and payload * 4 <= SHARED_MAX_BYTES and all_on_one_host(group):
            self.local = SharedMemoryGather.create(payload, group)
        if transport == "shared_memory" and self.local is None:
            raise ValueError("the shared-memory exchange needs CPU tensors, every rank on one host and a usable /dev/shm")
        if self.local is not None or self.world * payload * 4 <= FUSED_MAX_BYTES:
            self.bounds = bounds

    @property
    def fused(self) -> bool:
        """Whether a step exchanges everything in one collective (or one shared-memory gather)."""
        return self.bounds is not None

    @property
    def transport(self) -> str:
        """How a step's gradients travel: ``shared_memory`` (ranks on one host), ``all_gather``
        (one collective) or ``all_reduce+all_gather``."""
        if self.local is not None:
            return "shared_memory"
        return "all_gather" if self.fused else "all_reduce+all_gather"

    def close(self) -> None:
        """Release the shared-memory exchange (sockets and mapping), if any."""
        if self.local is not None:
            self.local.close()
            self.local = None
            self.bounds = None

    def broadcast_parameters(self, model: nn.Module, src: int = 0) -> None:
        """Make every rank start from rank ``src``'s parameters and buffers."""
        with torch.no_grad():
            for t in list(model.parameters()) + list(model.buffers()):
                dist.broadcast(t.data, src, group=self.group)

    def broadcast_buffers(self, model: nn.Module, src: int = 0) -> None:
        """Make every rank's buffers — the state not trained by gradients, which differs between
        ranks: STAR's running statistics, MAML's support rows — rank ``src``'s."""
        with torch.no_grad():
            for t in model.buffers():
                dist.broadcast(t.data, src, group=self.group)

    def reset_timings(self) -> dict[str, float]:
        """The phase timings so far (see ``timings``), then zero them."""
        out, self.timings = self.timings, dict.fromkeys(self.timings, 0.0)
        return out

    def _tick(self, phase: str, since: float) -> float:
        now = time.perf_counter()
        self.timings[phase] += now - since
        return now

    def average(self, weight: float = 1.0, flag: float = 0.0) -> tuple[float, float]:
        """Every rank's gradients → their mean weighted by ``weight`` (e.g. the rank's rows this
        step; 0: no batch, its gradients are ignored). Returns the ranks' summed weights and
        summed ``flag``, the same on every rank. Summed weights of 0 leave every gradient None
        (nothing to step on)."""
        if self.world == 1:
            return weight, flag
        t = time.perf_counter()
        local = [self._local_rows(p, weight) for p in self.sparse]
        t = self._tick("coalesce", t)
        if self.bounds is not None:
            return self._average_fused(local, weight, flag, t)
        counts, total, flags = self._average_dense([rows.numel() for rows, _ in local], weight, flag, t)
        for p, (rows, values), sizes in zip(self.sparse, local, counts):
            self._average_sparse(p, rows, values, sizes, total)
        return total, flags

    def _local_rows(self, p: nn.Parameter, weight: float) -> tuple[torch.Tensor, torch.Tensor]:
        if p.grad is None or weight == 0:
            return torch.zeros(0, dtype=torch.int64, device=p.device), p.new_zeros(0, p.shape[1])
        g = p.grad.coalesce()
        return g.indices()[0], g.values() if weight == 1 else g.values() * weight

    def _dense_parts(self, weight: float) -> list[torch.Tensor]:
        """This rank's dense gradients, flat (a parameter without a gradient on this rank, or a
        rank of weight 0, contributes zeros: the others' may not be None); the caller scales
        them by ``weight`` once they are one buffer (:meth:`_scale_dense`)."""
        if weight == 0:
            return [torch.zeros(p.numel(), device=p.device) for p in self.dense]
        return [p.grad.reshape(-1).float() if p.grad is not None else torch.zeros(p.numel(), device=p.device) for p in self.dense]

    def _scale_dense(self, buffer: torch.Tensor, weight: float) -> None:
        """The dense part of a packed buffer × ``weight``, in place: one op for all parameters."""
        if weight not in (0, 1):
            buffer[: self.n_dense].mul_(weight)

    def _set_mean(self, summed: torch.Tensor, total: float) -> int:
        """Dense gradients from their weighted sum (None for all when ``total`` is 0)."""
        if total == 0:
            for p in self.dense:
                p.grad = None
            return self.n_dense
        return self._set_dense_grads(summed.div_(total))

    def _average_dense(self, row_counts: list[int], weight: float, flag: float, t: float) -> tuple[list[list[int]], float, float]:
        """One all-reduce for every dense gradient, with each table's row count riding along.

        The counts sit in a (tables, world) block, this rank's in its own column, so the sum
        gives every rank every count (exact in float32 up to 2^24 rows per rank and step)."""
        device = self.dense[0].device if self.dense else self.sparse[0].device
        block = torch.zeros(len(row_counts), self.world, device=device)
        if row_counts:
            if max(row_counts) >= 1 << 24:
                raise ValueError(f"{max(row_counts)} embedding rows in one step exceed the 2^24 this exchange counts exactly")
            rank = dist.get_rank(self.group)
            block[:, rank] = torch.tensor(row_counts, dtype=torch.float32, device=device)
        tail = torch.tensor([weight, flag], dtype=torch.float32, device=device)  # rows: exact below 2^24
        flat = torch.cat(self._dense_parts(weight) + [block.reshape(-1), tail])
        self._scale_dense(flat, weight)
        t = self._tick("merge", t)
        dist.all_reduce(flat, group=self.group)
        t = self._tick("collective", t)
        total, flags = (float(x) for x in flat[-2:])
        offset = self._set_mean(flat[: self.n_dense], total)
        counts = flat[offset:-2].view(len(row_counts), self.world).long().tolist()
        self._tick("merge", t)
        return counts, total, flags

    def _set_dense_grads(self, mean: torch.Tensor) -> int:
        """Each dense parameter's gradient as a view of the flat mean (one division for all);
        returns where the dense part ends."""
        offset = 0
        for p in self.dense:
            n = p.numel()
            p.grad = mean[offset : offset + n].view_as(p).to(p.dtype)
            offset += n
        return offset

    def _average_fused(self, local: list[tuple[torch.Tensor, torch.Tensor]], weight: float, flag: float,
                       t: float) -> tuple[float, float]:
        """One all-gather of [dense grads | weight, flag | row counts | each table's rows padded to its bound]."""
        device = self.dense[0].device if self.dense else self.sparse[0].device
        parts = self._dense_parts(weight)
        parts.append(torch.tensor([weight, flag], dtype=torch.float32, device=device))
        parts.append(torch.tensor([rows.numel() for rows, _ in local], dtype=torch.float32, device=device))
        for p, (rows, values), bound in zip(self.sparse, local, self.bounds):
            if rows.numel() > bound:  # cannot happen while the bound holds; never hang the others
                raise ValueError(f"{rows.numel()} embedding rows in one step exceed the bound {bound} given to GradientAverager")
            block = torch.zeros(bound, p.shape[1] + 2, dtype=torch.float32, device=device)
            _pack_rows(rows, values, block)
            parts.append(block.reshape(-1))
        if self.local is not None:
            slot = self.local.next_slot()
            torch.cat(parts, out=slot)  # packed straight into shared memory
            self._scale_dense(slot, weight)
            t = self._tick("merge", t)
            gathered = self.local.gather()  # a view of shared memory, read before the next step
        else:
            flat = torch.cat(parts)
            self._scale_dense(flat, weight)
            t = self._tick("merge", t)
            gathered = torch.empty(self.world, flat.numel(), dtype=flat.dtype, device=device)
            dist.all_gather(list(gathered.unbind(0)), flat, group=self.group)  # rows of one buffer
        t = self._tick("collective", t)
        total, flags = (float(x) for x in gathered[:, self.n_dense : self.n_dense + 2].sum(0))
        offset = self._set_mean(gathered[:, : self.n_dense].sum(0), total) + 2
        counts = gathered[:, offset : offset + len(self.sparse)].long().T.tolist()  # (tables, world)
        offset += len(self.sparse)
        for p, bound, sizes in zip(self.sparse, self.bounds, counts):
            width = p.shape[1] + 2
            blocks = gathered[:, offset : offset + bound * width].reshape(self.world, bound, width)
            offset += bound * width
            p.grad = None if max(sizes) == 0 else _sparse_mean(p, list(blocks.unbind(0)), sizes, total)
        self._tick("merge", t)
        return total, flags

    def _average_sparse(self, p: nn.Parameter, rows: torch.Tensor, values: torch.Tensor, sizes: list[int], total: float) -> None:
        if max(sizes) == 0:  # no rank touched the table this step (every rank knows it)
            p.grad = None
            return
        t = time.perf_counter()
        dim = p.shape[1]
        packed = torch.zeros(max(sizes), dim + 2, dtype=torch.float32, device=p.device)
        _pack_rows(rows, values, packed)
        gathered = [torch.empty_like(packed) for _ in range(self.world)]
        t = self._tick("merge", t)
        dist.all_gather(gathered, packed, group=self.group)
        t = self._tick("collective", t)
        p.grad = _sparse_mean(p, gathered, sizes, total)
        self._tick("merge", t)


__all__ = ["GradientAverager"]
