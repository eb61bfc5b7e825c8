"""The training loop: one implementation of the step, the evaluation and the best-epoch choice.

:class:`LoopRunner` owns what every training run does the same way:

* the **step** — forward, the objective L_CTR (eq. 1) + R_s (eq. 9), backward, the gradient
  sync hook, the optimiser step — under bfloat16 autocast where asked (``precision``);
* the **evaluation** — LogLoss/AUC/GAUC from mergeable per-domain statistics
  (:mod:`adasparse.metrics`) and r^l per pruned layer, through a merge hook so that data-parallel
  workers combine their parts exactly;
* the **best epoch** — by dev GAUC, NaN-safe (a NaN never beats a number), restored at the end;
* its **state** — model, optimiser, best epoch and history — to checkpoint and resume.

Where the batches come from, how gradients and metrics travel between workers, and what
happens after an epoch are hooks, overridden by a subclass: :class:`InMemoryRunner` below (one
process, encoded arrays in memory) and the Ray Train worker in ``pipelines/train/worker.py``.
Adding a model does not touch this file: a model is anything with ``forward(cat_ids, numeric)``
→ :class:`adasparse.model.ModelOutput` and ``objective(output, labels)``.

A batch is a dict of NumPy arrays: ``cat_ids`` (B, fields) int64, ``numeric`` (B, n) float32,
``label`` (B,) float32, ``domain`` (B,) int64 (the GAUC grouping key).
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
import torch.distributed as dist

from adasparse.encoding import EncodedBatch
from adasparse.metrics import CTRMetrics
from adasparse.model import collective_lookups

Batch = dict[str, np.ndarray]
EVAL_BATCH_ROWS = 4096  # rows per evaluation forward (no gradients: larger batches are cheaper)


@dataclass
class EvalSums:
    """What one worker accumulates over an evaluation: merged across workers by a hook."""

    metrics: CTRMetrics
    pruned: np.ndarray | None = None  # Σ over batches of r^l × rows, per pruned layer
    rows: int = 0
    domain_pruned: DomainSparsity | None = None  # per domain: rows and Σ of each row's r^l
    masks: DomainMasks | None = None  # per tracked domain: Σ of each row's kept-neuron indicators

    @classmethod
    def merge(cls, parts: list["EvalSums"]) -> "EvalSums":
        pruned = [p.pruned for p in parts if p.pruned is not None]
        per_domain = [p.domain_pruned for p in parts if p.domain_pruned is not None]
        masks = [p.masks for p in parts if p.masks is not None]
        return cls(CTRMetrics.from_states([p.metrics.state() for p in parts]),
                   np.sum(pruned, axis=0) if pruned else None, sum(p.rows for p in parts),
                   DomainSparsity.merge(per_domain) if per_domain else None,
                   DomainMasks.merge(masks) if masks else None)


@dataclass
class DomainSparsity:
    """Per domain key: evaluated rows and the sum over them of each pruned layer's r^l (the
    share of the layer's neurons pruned for that row). ``mean`` is the per-domain sparsity."""

    keys: np.ndarray  # (D,) int64, sorted
    rows: np.ndarray  # (D,) int64
    sums: np.ndarray  # (D, L) float64

    @classmethod
    def of_rows(cls, domains: np.ndarray, ratios: np.ndarray) -> "DomainSparsity":
        keys, inv = np.unique(np.asarray(domains, dtype=np.int64), return_inverse=True)
        inv = inv.reshape(-1)
        sums = np.zeros((len(keys), ratios.shape[1]))
        np.add.at(sums, inv, ratios)
        return cls(keys, np.bincount(inv, minlength=len(keys)).astype(np.int64), sums)

    @classmethod
    def merge(cls, parts: list["DomainSparsity"]) -> "DomainSparsity":
        keys = np.concatenate([p.keys for p in parts])
        uniq, inv = np.unique(keys, return_inverse=True)
        inv = inv.reshape(-1)
        sums = np.zeros((len(uniq), parts[0].sums.shape[1]))
        np.add.at(sums, inv, np.concatenate([p.sums for p in parts]))
        rows = np.bincount(inv, weights=np.concatenate([p.rows for p in parts]), minlength=len(uniq)).astype(np.int64)
        return cls(uniq, rows, sums)

    @property
    def mean(self) -> np.ndarray:
        """(D, L): each domain's r^l per pruned layer, averaged over its rows."""
        return self.sums / np.maximum(self.rows, 1)[:, None]


@dataclass
class DomainMasks:
    """Per tracked domain key: evaluated rows and the sum over them of each row's 0/1 kept
    indicator of every neuron of the pruned layers (side by side, ΣN_l columns). ``mean`` is the
    per-domain mean mask (the paper's Fig. 3(a) for ``instance`` mode, where π depends on the row)."""

    keys: np.ndarray  # (K,) int64, sorted
    rows: np.ndarray  # (K,) int64
    kept: np.ndarray  # (K, ΣN_l) float64

    @classmethod
    def tracking(cls, keys: np.ndarray, width: int) -> "DomainMasks":
        keys = np.unique(np.asarray(keys, dtype=np.int64))
        return cls(keys, np.zeros(len(keys), dtype=np.int64), np.zeros((len(keys), width)))

    def add(self, domains: np.ndarray, gates: np.ndarray) -> None:
        """Add the rows of tracked domains (``gates``: (B, ΣN_l) 0/1); other rows are ignored."""
        if not len(self.keys):
            return
        idx = np.searchsorted(self.keys, domains)
        idx = np.minimum(idx, len(self.keys) - 1)
        hit = self.keys[idx] == domains
        if hit.any():
            # rows grouped by domain, each group's gates summed in one reduceat (np.add.at, row
            # by row, took ~36 ms a 4,096-row batch: most of the test evaluation's extra cost)
            idx, rows = idx[hit], gates[hit]
            order = np.argsort(idx, kind="stable")
            idx, rows = idx[order], rows[order]
            starts = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
            self.kept[idx[starts]] += np.add.reduceat(rows, starts, axis=0)  # 0/1 counts: exact in float32 below 2^24 rows
            self.rows += np.bincount(idx, minlength=len(self.keys))

    @classmethod
    def merge(cls, parts: list["DomainMasks"]) -> "DomainMasks":
        return cls(parts[0].keys, np.sum([p.rows for p in parts], axis=0), np.sum([p.kept for p in parts], axis=0))

    @property
    def mean(self) -> np.ndarray:
        """(K, ΣN_l): the share of each domain's rows that keep each neuron."""
        return self.kept / np.maximum(self.rows, 1)[:, None]


@dataclass
class EvalResult:
    metrics: dict[str, float]
    sparsity: list[float]  # r^l per pruned layer, averaged over the evaluated rows
    domains: CTRMetrics | None = None  # the merged statistics (per-domain figures)
    domain_sparsity: DomainSparsity | None = None  # r^l per pruned layer of every domain
    masks: DomainMasks | None = None  # the tracked domains' mean masks (see LoopRunner.mask_domains)


@dataclass
class BestEpoch:
    """The best epoch so far by dev GAUC. A NaN GAUC (no domain with both classes) never
    beats a number; the first epoch is taken whatever its GAUC, so there is always one."""

    epoch: int = 0
    dev: dict[str, float] = field(default_factory=dict)
    sparsity: list[float] = field(default_factory=list)
    state: dict[str, torch.Tensor] | None = None

    def offer(self, epoch: int, dev: dict[str, float], sparsity: list[float], model: torch.nn.Module) -> bool:
        """Keep this epoch (a copy of the model's weights) if it beats the best; returns whether it did."""
        if not better_gauc(dev.get("gauc", math.nan), self.dev.get("gauc") if self.state is not None else None):
            return False
        self.epoch, self.dev, self.sparsity = epoch, dict(dev), list(sparsity)
        self.state = copy.deepcopy(model.state_dict())
        return True

    def meta(self) -> dict[str, Any]:
        return {"best_epoch": self.epoch, "best_dev": self.dev, "best_sparsity": self.sparsity}


def better_gauc(new: float, best: float | None) -> bool:
    """Whether a dev GAUC ``new`` beats ``best`` (None: there is no best yet). NaN-safe."""
    if best is None:
        return True
    if math.isnan(new):
        return False
    return math.isnan(best) or new > best


@dataclass
class FitResult:
    best_epoch: int
    dev: EvalResult
    history: list[dict] = field(default_factory=list)
    samples_per_s: float = 0.0  # rows trained per second of this worker's training time


@dataclass
class EpochProgress:
    """Where an epoch stands: the lock-step updates so far (the same on every worker), the rows
    of all workers, and this worker's own figures — what a mid-epoch checkpoint keeps so that
    the epoch's figures after a restart are those of the uninterrupted epoch."""

    epoch: int
    steps: int = 0  # updates so far (every worker's count)
    rows_all: int = 0  # rows of all workers in those updates
    rows: int = 0  # this worker's rows
    local_steps: int = 0  # updates with a batch of this worker
    loss_sum: float = 0.0  # this worker's summed objective over them
    train_s: float = 0.0  # seconds trained in this epoch so far (over attempts)
    rows_before: int = 0  # this worker's rows when this attempt took the epoch up (not trained by it)
    loss_sum_t: Any = None  # the running sum on the device (read when a checkpoint is written)

    def state(self) -> dict[str, Any]:
        loss = float(self.loss_sum_t) if self.loss_sum_t is not None else self.loss_sum
        return {"epoch": self.epoch, "steps": self.steps, "rows_all": self.rows_all, "rows": self.rows,
                "local_steps": self.local_steps, "loss_sum": loss, "train_s": self.train_s}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> "EpochProgress":
        keys = ("epoch", "steps", "rows_all", "rows", "local_steps", "loss_sum", "train_s")
        return cls(**{k: d[k] for k in keys}, rows_before=int(d["rows"]))


def schedule_state(model) -> dict:
    """α and λ̂ where the model's schedules stand (for the history), if it has them."""
    out = {}
    for name in ("alpha", "lambda_hat"):
        value = getattr(model, name, None)
        if isinstance(value, float):
            out[name] = value
    return out


def _tensor(a: np.ndarray, device: torch.device) -> torch.Tensor:
    """A batch column as a tensor on ``device`` (zero-copy on CPU: batches are never written)."""
    with warnings.catch_warnings():  # streamed batches can be read-only arrays; we only read them
        warnings.simplefilter("ignore", UserWarning)
        t = torch.from_numpy(a)
    return t if device.type == "cpu" else t.to(device, non_blocking=True)


class LoopRunner:
    """Trains ``model`` with ``optimizer`` for ``epochs`` epochs; override the hooks.

    Hooks: :meth:`train_batches` and :meth:`eval_batches` (required), :meth:`sync_gradients`,
    :meth:`merge_eval`, :meth:`on_progress`, :meth:`on_epoch_end`, :meth:`epoch_extras`."""

    progress_every_s: float | None = None  # how often :meth:`on_progress` is called in an epoch

    def __init__(self, model: torch.nn.Module, optimizer, *, epochs: int, precision: str = "auto",
                 rows_per_epoch: int | None = None, workers: int = 1):
        self.model, self.optimizer, self.epochs = model, optimizer, epochs
        plan = getattr(model, "plan_schedule", None)
        if plan is not None:  # the schedules run on the samples of all workers, over the whole run
            plan(rows_per_epoch * epochs if rows_per_epoch else None, workers)
        self.device = next(model.parameters()).device
        dtype = {"auto": torch.bfloat16 if self.device.type == "cuda" else None,
                 "float32": None, "bfloat16": torch.bfloat16}[precision]
        self._amp_dtype = dtype
        self.epoch = 0  # the last finished epoch (0: none); training continues at epoch + 1
        self.best = BestEpoch()
        self.history: list[dict] = []
        self.rows_trained, self.train_seconds = 0, 0.0
        self.last_eval: dict[str, EvalResult] = {}  # the latest evaluation of each split
        self.mask_domains: np.ndarray | None = None  # domain keys whose mean masks evaluation sums up
        self._sync_s = 0.0  # seconds in sync_gradients since the epoch began
        self.progress: EpochProgress | None = None  # the epoch in progress (set on resume from a mid-epoch checkpoint)
        self.step_rows, self.step_flags = 0, 0.0  # the last step's rows of all workers and summed flags
        self.collective = collective_lookups(model)  # sharded tables: every worker takes part in every lookup

    # -- hooks ------------------------------------------------------------------------------
    def train_batches(self, epoch: int) -> Iterable[Batch]:
        raise NotImplementedError

    def eval_batches(self, split: str) -> Iterable[Batch]:
        raise NotImplementedError

    def sync_gradients(self, rows: int) -> tuple[int, float]:
        """Between backward and the optimiser step. ``rows``: this worker's batch (0: it has none
        left this epoch, and no gradients). Data parallel: every worker's gradients → their mean
        weighted by rows. Returns the step's rows of all workers — 0 when every worker is out of
        data, which ends the epoch on all of them at the same step — and :meth:`step_flag` summed
        over the workers."""
        return rows, self.step_flag()

    def step_flag(self) -> float:
        """This worker's flag for the step (summed over workers by the exchange): > 0 asks every
        worker to act together after the step (:meth:`after_step`), e.g. to checkpoint."""
        return 0.0

    def after_step(self, progress: "EpochProgress", flag: float) -> None:
        """After every update, on every worker at the same step (``flag``: the summed step flags)."""

    def merge_eval(self, sums: EvalSums) -> EvalSums:
        """This worker's evaluation sums → every worker's, merged (one worker: as they are)."""
        return sums

    def on_progress(self, epoch: int, rows: int, elapsed_s: float, loss: float, wait_s: float) -> None:
        """Every :attr:`progress_every_s` seconds of an epoch (rows: this worker's so far)."""

    def on_epoch_end(self, record: dict, improved: bool) -> None:
        """After an epoch's dev evaluation (``improved``: it is the best so far): report, checkpoint."""

    def epoch_extras(self) -> dict:
        """Extra fields for an epoch's history record (e.g. the exchange's phase timings)."""
        return {}

    # -- the loop -------------------------------------------------------------------------
    def autocast(self):
        return torch.autocast(self.device.type, dtype=self._amp_dtype, enabled=self._amp_dtype is not None)

    def step(self, batch: Batch | None) -> torch.Tensor | None:
        """One update on one batch; returns the objective (detached, on the device), None for a
        worker without a batch. The update is on every worker's rows of the step
        (:meth:`sync_gradients`): :attr:`step_rows` says how many (0: none anywhere, no update),
        :attr:`step_flags` the summed step flags."""
        self.optimizer.zero_grad()
        obj = None
        if batch is not None:
            with self.autocast():
                out = self.model(_tensor(batch["cat_ids"], self.device), _tensor(batch["numeric"], self.device))
                obj = self.model.objective(out, _tensor(batch["label"], self.device))
            obj.total.backward()
        elif self.collective:  # sharded tables: the lookup and its backward need every worker
            self.model.embedding.idle()
        ts = time.perf_counter()
        self.step_rows, self.step_flags = self.sync_gradients(0 if batch is None else len(batch["label"]))
        self._sync_s += time.perf_counter() - ts
        if self.step_rows == 0:
            return None
        if not getattr(self.model, "clock_in_forward", True):
            self.model.advance(self.step_rows)  # the schedules' clock: every worker's rows, the same everywhere
        self.optimizer.step()
        return None if obj is None else obj.total.detach()

    def train_epoch(self, epoch: int) -> dict:
        """One pass over :meth:`train_batches`; returns the epoch's training figures. Workers step
        together until every one is out of rows (a worker whose stream ends first takes part in
        the remaining steps without a batch). An epoch interrupted by a restart continues from
        :attr:`progress` (its figures include the part trained before)."""
        self.model.train()
        t0 = time.perf_counter()
        shown = t0
        prog = self.progress if self.progress is not None and self.progress.epoch == epoch else EpochProgress(epoch)
        self.progress = prog
        resumed_s = prog.train_s
        loss_sum = torch.full((), prog.loss_sum, dtype=torch.float64, device=self.device)
        wait = 0.0
        self._sync_s = 0.0
        first_wait: float | None = None
        since_shown = torch.zeros((), dtype=torch.float64, device=self.device)
        steps_shown = 0
        it: Iterator[Batch] = iter(self.train_batches(epoch))
        done = False
        while True:
            tw = time.perf_counter()
            batch = None if done else next(it, None)
            done = batch is None
            wait += time.perf_counter() - tw
            if first_wait is None:
                first_wait = wait  # the stream's start-up
            loss = self.step(batch)
            if self.step_rows == 0:
                break
            prog.steps += 1
            prog.rows_all += self.step_rows
            if loss is not None:
                loss_sum += loss
                since_shown += loss
                prog.local_steps += 1
                steps_shown += 1
                prog.rows += len(batch["label"])
            prog.loss_sum_t, prog.train_s = loss_sum, resumed_s + time.perf_counter() - t0
            self.after_step(prog, self.step_flags)
            if self.progress_every_s is not None and time.perf_counter() - shown > self.progress_every_s:
                shown = time.perf_counter()
                self.on_progress(epoch, prog.rows, shown - t0, float(since_shown) / max(steps_shown, 1), wait)
                since_shown.zero_()
                steps_shown = 0
        train_s = resumed_s + time.perf_counter() - t0
        self.rows_trained += prog.rows - prog.rows_before
        self.train_seconds += train_s - resumed_s
        self.progress = None
        return {"train_loss": float(loss_sum) / prog.local_steps if prog.local_steps else math.nan, "rows": prog.rows,
                "rows_all_workers": prog.rows_all, "steps": prog.steps,
                **schedule_state(self.model),
                "rows_per_s_worker": prog.rows / max(train_s, 1e-9), "data_wait_s": wait, "first_batch_s": first_wait or 0.0,
                "grad_sync_s": self._sync_s, "train_s": train_s}

    @torch.no_grad()
    def evaluate(self, split: str) -> EvalResult:
        """LogLoss/AUC/GAUC (exact, merged over workers) and r^l per pruned layer on ``split``."""
        was = self.model.training
        self.model.eval()
        sums = EvalSums(CTRMetrics())
        parts: list[DomainSparsity] = []
        widths = getattr(self.model, "pruned_widths", [])
        if self.mask_domains is not None and widths:
            sums.masks = DomainMasks.tracking(self.mask_domains, sum(widths))
        try:
            with self.autocast():
                for b in self._in_step(self.eval_batches(split)):
                    out = self.model(_tensor(b["cat_ids"], self.device), _tensor(b["numeric"], self.device))
                    sums.metrics.update(b["domain"], b["label"], logits=out.logits.float().cpu().numpy())
                    n = len(b["label"])
                    if out.ratios is not None:
                        r = out.ratios.float().cpu().numpy().astype(np.float64) * n
                        sums.pruned = r if sums.pruned is None else sums.pruned + r
                    if out.prune is not None:  # each row's r^l, summed per domain
                        gates = out.prune.row_gates()
                        per_row = np.stack([1.0 - g.float().mean(1).cpu().numpy().astype(np.float64)
                                            for g in gates], axis=1)
                        parts.append(DomainSparsity.of_rows(b["domain"], per_row))
                        if sums.masks is not None:
                            sums.masks.add(np.asarray(b["domain"], dtype=np.int64), torch.cat(gates, dim=1).cpu().numpy())
                        if len(parts) >= 64:  # bound the pending parts: merge them into one
                            parts = [DomainSparsity.merge(parts)]
                    sums.rows += n
        finally:
            self.model.train(was)
        sums.domain_pruned = DomainSparsity.merge(parts) if parts else None
        merged = self.merge_eval(sums)
        sparsity = [] if merged.pruned is None else (merged.pruned / max(merged.rows, 1)).tolist()
        self.last_eval[split] = EvalResult(merged.metrics.compute(), sparsity, merged.metrics, merged.domain_pruned, merged.masks)
        return self.last_eval[split]

    def _in_step(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        """``batches``; with sharded tables every worker looks up together: each batch waits for
        every worker's (one flag summed over them), and a worker out of batches takes part in
        the others' lookups without rows until all are out."""
        if not self.collective or not dist.is_initialized():
            yield from batches
            return
        it = iter(batches)
        while True:
            b = next(it, None)
            more = torch.tensor([0.0 if b is None else 1.0], device=self.device)
            dist.all_reduce(more)
            if float(more) == 0:
                return
            if b is None:
                self.model.embedding.idle()
            else:
                yield b

    def fit(self) -> FitResult:
        """Train the remaining epochs (from :attr:`epoch` + 1), evaluate dev after each, keep the
        best epoch by dev GAUC and leave its weights in the model."""
        for epoch in range(self.epoch + 1, self.epochs + 1):
            stats = self.train_epoch(epoch)
            t0 = time.perf_counter()
            dev = self.evaluate("dev")
            record = {"epoch": epoch, **stats, **self.epoch_extras(), "dev_eval_s": time.perf_counter() - t0,
                      **{f"dev_{k}": v for k, v in dev.metrics.items()}, "sparsity": dev.sparsity}
            self.history.append(record)
            improved = self.best.offer(epoch, dev.metrics, dev.sparsity, self.model)
            self.epoch = epoch
            t0 = time.perf_counter()
            self.on_epoch_end(record, improved)
            # the epoch's report and checkpoint (measured after they are written: absent from that checkpoint's copy)
            record["epoch_end_s"] = time.perf_counter() - t0
        if self.best.state is None:
            raise RuntimeError("no epoch was trained (epochs already done and no best epoch restored)")
        self.model.load_state_dict(self.best.state)
        dev = EvalResult(self.best.dev, self.best.sparsity)
        return FitResult(self.best.epoch, dev, self.history, self.rows_trained / self.train_seconds if self.train_seconds else 0.0)

    # -- state ------------------------------------------------------------------------------
    def state_tensors(self, with_optimizer: bool = True) -> dict[str, Any]:
        """Tensors to checkpoint (loadable with ``torch.load(weights_only=True)``)."""
        out = {"model": self.model.state_dict(), "best_model": self.best.state}
        if with_optimizer:
            out["optim"] = self.optimizer.state_dict()
        return out

    def state_meta(self) -> dict[str, Any]:
        """The JSON part of a checkpoint: last finished epoch, best epoch, history."""
        meta = {"epoch": self.epoch, **self.best.meta(), "history": self.history}
        if self.progress is not None:  # a mid-epoch checkpoint
            meta["in_progress"] = self.progress.state()
        return meta

    def load_state(self, tensors: dict[str, Any], meta: dict[str, Any]) -> None:
        """Continue from a checkpoint written from :meth:`state_tensors` and :meth:`state_meta`."""
        self.model.load_state_dict(tensors["model"])
        if "optim" in tensors:
            self.optimizer.load_state_dict(tensors["optim"])
        self.best = BestEpoch(meta["best_epoch"], meta["best_dev"], meta["best_sparsity"], tensors["best_model"])
        self.history = list(meta["history"])
        self.epoch = int(meta["epoch"])
        progress = meta.get("in_progress")
        self.progress = EpochProgress.from_state(progress) if progress else None


class InMemoryRunner(LoopRunner):
    """The loop over encoded arrays in memory (one process): ``adasparse demo --in-memory``,
    the library's tests and the benchmarks' plain-PyTorch baseline."""

    def __init__(self, model, optimizer, splits: dict[str, EncodedBatch], *, epochs: int, batch_size: int,
                 seed: int = 0, shuffle: bool = True, precision: str = "auto",
                 log: Callable[[str], None] | None = None):
        super().__init__(model, optimizer, epochs=epochs, precision=precision, rows_per_epoch=len(splits["train"]))
        self.splits, self.batch_size, self.shuffle, self.log = splits, batch_size, shuffle, log
        self._rng = np.random.default_rng(seed)

    def train_batches(self, epoch: int) -> Iterator[Batch]:
        return encoded_batches(self.splits["train"], self.batch_size, self._rng if self.shuffle else None)

    def eval_batches(self, split: str) -> Iterator[Batch]:
        return encoded_batches(self.splits[split], max(self.batch_size, EVAL_BATCH_ROWS))

    def on_epoch_end(self, record: dict, improved: bool) -> None:
        if self.log is None:
            return
        spars = " ".join(f"{r:.2f}" for r in record["sparsity"])
        self.log(f"epoch {record['epoch']}: loss {record['train_loss']:.5f} dev logloss {record['dev_logloss']:.5f} "
                 f"auc {record['dev_auc']:.4f} gauc {record['dev_gauc']:.4f}" + (f" sparsity [{spars}]" if spars else ""))


def encoded_batches(data: EncodedBatch, batch_size: int, rng: np.random.Generator | None = None) -> Iterator[Batch]:
    """Batches of in-memory encoded rows, in a random order when ``rng`` is given."""
    n = len(data)
    label = data.label if data.label is not None else np.zeros(n, dtype=np.float32)
    if rng is None:
        for i in range(0, n, batch_size):
            s = slice(i, i + batch_size)
            yield {"cat_ids": data.cat_ids[s], "numeric": data.numeric[s], "label": label[s], "domain": data.domain[s]}
        return
    order = rng.permutation(n)
    for i in range(0, n, batch_size):
        idx = order[i : i + batch_size]
        yield {"cat_ids": data.cat_ids[idx], "numeric": data.numeric[idx], "label": label[idx], "domain": data.domain[idx]}


__all__ = ["Batch", "BestEpoch", "DomainSparsity", "EpochProgress", "EvalResult", "EvalSums", "FitResult", "InMemoryRunner", "LoopRunner", "better_gauc",
           "encoded_batches"]
