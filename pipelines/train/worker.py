"""Inside each Ray Train worker: the library's training loop with Ray's shards, exchange and reports.

:class:`RayTrainRunner` is the adapter: the loop itself (step, evaluation, best epoch) is
:class:`adasparse.loop.LoopRunner`; this file supplies what only a Ray Train worker has —

* **batches**: the train split as this worker's own stream (:mod:`pipelines.data.train_stream`:
  a seeded deal of row groups, resumable mid-epoch); its share of dev and test read the same
  way, dev kept in memory across epochs (:mod:`pipelines.train.eval_reader`); the first epoch's
  stream starts while the model and the process group are set up;
* **the gradient exchange**: :class:`adasparse.distributed.GradientAverager` (every worker's
  gradient each step, weighted by its rows; a worker out of rows takes part with weight 0 until
  all are; see its docstring for why this is not DistributedDataParallel);
* **the metric merge**: every worker's evaluation sums gathered and merged, so dev and test
  metrics are exact over all rows;
* **the report and the checkpoint**: every worker reports once per epoch (rank 0 with the
  checkpoint of :mod:`pipelines.train.checkpoints`), within an epoch every ``faults.checkpoint_every_*``
  (every worker at the same update: the step count, or rank 0's clock carried by the exchange;
  the checkpoint holds every worker's stream position, its epoch figures so far and its RNG
  state), and once more at the end with the final figures.
"""

from __future__ import annotations

import logging
import os
import sys
import time

import numpy as np

from adasparse.host import usable_cores
from adasparse.loop import EVAL_BATCH_ROWS, EvalSums, LoopRunner
from pipelines.train.worker_config import WorkerConfig


def node_threads(local_workers: int, node_cpus: float | None) -> int:
    """Intra-op threads for one of ``local_workers`` train workers on this node: the node's CPUs
    (``node_cpus``, its Ray CPU resource; None: not known) shared among them, never more than
    the cores this process may run on. The CPUs a worker *reserves* can be a fraction (a CPU is
    left to Ray Data), but ingest needs only a few percent of a core at training speed, so
    threads follow the node's CPUs, not the reservation (docs/training.md)."""
    cores = usable_cores()
    cpus = cores if node_cpus is None else min(node_cpus, cores)
    return max(1, int(cpus) // max(1, local_workers))


def _quiet_report_log() -> None:
    """Ray Train logs every report (all metrics, every rank) at INFO: noise beside our progress
    lines. Its logger is named by the module's file path (Ray 2.60); nothing else is silenced."""
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


class RayTrainRunner(LoopRunner):
    """The loop's hooks for one Ray Train worker (``cfg``: the driver's :class:`WorkerConfig`)."""

    progress_every_s = 15.0  # rank 0 prints rows/s, loss and data wait this often

    def __init__(self, model, optimizer, cfg: WorkerConfig, *, rank: int, world: int, averager=None, vocab=None,
                 session=None):
        super().__init__(model, optimizer, epochs=cfg.train.epochs, precision=cfg.train.precision,
                         rows_per_epoch=cfg.train_rows, workers=world)
        self.cfg, self.rank, self.world, self.averager, self.vocab = cfg, rank, world, averager, vocab
        self.session = session  # pipelines.train.session: Ray Train's worker, or this process
        self.sharded = getattr(model.embedding, "tables", None)  # ShardedTables (model.embedding.sharding), or None
        self._first_stream = None  # the first epoch's batches, started early (start_first_epoch)
        self.restarts: list[dict] = []
        self.stream = None  # the epoch's WorkerStream
        self._eval_readers: dict = {}  # dev and test: this worker's share (pipelines.train.eval_reader)
        self.resume_at: dict | None = None  # the in-progress epoch of a mid-epoch checkpoint: streams and positions
        self._mid: dict | None = None  # what the mid-epoch checkpoint being written holds of every worker
        self.every_steps = cfg.faults.checkpoint_every_steps
        minutes = cfg.faults.checkpoint_every_minutes
        self.every_s = None if minutes is None else 60.0 * minutes
        self._last_checkpoint = time.monotonic()

    def state_meta(self) -> dict:
        """The loop's checkpoint record, with when it was written, by which launch of the job,
        and the run's restarts so far (:mod:`pipelines.train.attempts`)."""
        meta = {**super().state_meta(), "written_at": time.time(), "launch": self.cfg.launch, "restarts": self.restarts}
        if self._mid is not None:  # every worker's part of the epoch in progress
            meta["in_progress"] = self._mid["meta"]
        return meta

    def state_tensors(self, with_optimizer: bool = True) -> dict:
        """The checkpoint's tensors; with sharded tables the whole tables in the replicated layout
        (a collective: every worker calls it; rank 0 gets them) and the fused optimiser's state."""
        out = super().state_tensors(with_optimizer)
        if self.sharded is not None:
            from adasparse.distributed.sharded_state import portable_optimizer, portable_state

            out["model"] = portable_state(self.model, out["model"])
            out["best_model"] = None if out["best_model"] is None else portable_state(self.model, out["best_model"])
            if with_optimizer:
                out["optim"] = {**out["optim"], "sharded": portable_optimizer(self.sharded)}
        if self._mid is not None:
            out["rng"] = self._mid["rng"]
        return out

    def load_state(self, tensors: dict, meta: dict) -> None:
        """Continue from a checkpoint; a mid-epoch one also gives this worker its part of the
        epoch in progress (its own figures when the number of workers is the same), the
        streams' positions and its RNG state."""
        import torch

        progress = meta.get("in_progress")
        mine = None
        if progress:
            ranks = progress["ranks"]
            own = ranks[self.rank] if self.rank < len(ranks) and len(ranks) == self.world else None
            common = {k: ranks[0][k] for k in ("epoch", "steps", "rows_all")}
            mine = own or {**common, "rows": 0, "local_steps": 0, "loss_sum": 0.0, "train_s": ranks[0]["train_s"]}
            self.resume_at = {"epoch": progress["epoch"], "streams": progress["streams"],
                              "positions": {int(k): tuple(v) for k, v in progress["positions"].items()}}
            rng = tensors.get("rng")
            if rng is not None and self.rank < len(rng) and len(rng) == self.world:
                torch.set_rng_state(rng[self.rank])
        if self.sharded is not None:
            tensors = self._sharded_from_portable(tensors)
        super().load_state(tensors, {**meta, "in_progress": mine})

    def _sharded_from_portable(self, tensors: dict) -> dict:
        """A checkpoint's whole tables (any sharding, any number of workers) → this worker's
        shards: the best epoch's weights become a snapshot of this worker's state, the live ones
        are loaded last; the fused optimiser's state is loaded here."""
        import copy

        from adasparse.distributed.sharded_state import load_portable_state
        from adasparse.distributed.sharded_tables import load_optimizer

        out = dict(tensors)
        if tensors.get("best_model") is not None:
            load_portable_state(self.model, tensors["best_model"])
            out["best_model"] = copy.deepcopy(self.model.state_dict())
        load_portable_state(self.model, tensors["model"])
        out["model"] = self.model.state_dict()
        optim = tensors.get("optim")
        if optim is not None:
            if optim.get("sharded") is None:
                from adasparse.config import ConfigError

                raise ConfigError("the run's checkpoint has no state of sharded tables' optimiser (written by a replicated "
                                  "run): resume it with model.embedding.sharding: replicated, or start a run of another name")
            load_optimizer(self.sharded, optim["sharded"])
        return out

    def checkpoint(self, final: dict | None = None, test_statistics: dict | None = None, test_masks: dict | None = None):
        """Rank 0's checkpoint (the weights with the vocabulary their ids come from); None elsewhere.
        Every worker calls it at the same point: sharded tables are gathered to rank 0 first."""
        from pipelines.train.checkpoints import write_checkpoint

        tensors = self.state_tensors(with_optimizer=final is None) if self.sharded is not None else None
        if self.rank != 0:
            return None
        return write_checkpoint(self, final, self.cfg.vocabulary_json, self.vocab.fingerprint() if self.vocab else None,
                                test_statistics, test_masks, tensors=tensors)

    def unseen_rows(self, split: str) -> int | None:
        """Rows of the split's latest evaluation whose domain was not a domain of the train split."""
        ev = self.last_eval.get(split)
        if self.vocab is None or ev is None or ev.domains is None:
            return None
        per = ev.domains.per_domain()
        return int(per.rows[~self.vocab.seen_in_train(per.domain)].sum())

    # -- hooks ------------------------------------------------------------------------------
    def start_first_epoch(self, epoch: int) -> None:
        """Start fetching ``epoch``'s first batch now, in the background (:class:`EarlyStart`),
        while the rest of the worker's set-up runs."""
        from pipelines.train.batching import EarlyStart

        self._first_stream = EarlyStart(self.epoch_batches(epoch))

    def train_batches(self, epoch: int):
        if self._first_stream is not None:
            stream, self._first_stream = self._first_stream, None
            return stream
        return self.epoch_batches(epoch)

    def epoch_batches(self, epoch: int):
        """This worker's train batches of ``epoch`` (from the positions of a mid-epoch checkpoint
        of that epoch, if the run resumed from one)."""
        resume = self.resume_at if self.resume_at is not None and self.resume_at["epoch"] == epoch else None
        self.stream = worker_stream(self.cfg, epoch, self.rank, self.world, resume, self.vocab)
        return self.stream

    def eval_batches(self, split: str):
        from pipelines.train.eval_reader import EvalReader

        if split not in self._eval_readers:  # dev's share is read once and kept (when small enough)
            self._eval_readers[split] = EvalReader(self.cfg.eval_data[split], self.rank, self.world, self.vocab,
                                                   max(self.cfg.train.batch_size, EVAL_BATCH_ROWS))
        return iter(self._eval_readers[split])

    def sync_gradients(self, rows: int) -> tuple[int, float]:
        if self.averager is None:
            return rows, self.step_flag()
        total, flag = self.averager.average(weight=rows, flag=self.step_flag())
        return int(round(total)), flag

    def step_flag(self) -> float:
        """Rank 0's clock asks for a mid-epoch checkpoint (the exchange carries it to all)."""
        if self.rank != 0 or self.every_s is None:
            return 0.0
        return float(time.monotonic() - self._last_checkpoint >= self.every_s)

    def after_step(self, progress, flag: float) -> None:
        due = flag > 0 or (self.every_steps is not None and progress.steps % self.every_steps == 0)
        if due and self.stream is not None:
            self.checkpoint_mid_epoch(progress)

    def checkpoint_mid_epoch(self, progress) -> None:
        """Every worker at the same update: gather each one's stream position, epoch figures and
        RNG state; rank 0 writes the checkpoint; every worker reports it."""
        import torch
        import torch.distributed as dist

        mine = (self.stream.position(), progress.state(), torch.get_rng_state())
        parts = [mine]
        if self.world > 1 and dist.is_initialized():
            parts = [None] * self.world
            dist.all_gather_object(parts, mine)
        positions: dict = {}
        for pos, _, _ in parts:
            positions.update({str(s): list(p) for s, p in pos.items()})
        self._mid = {"meta": {"epoch": progress.epoch, "steps": progress.steps, "streams": len(self.stream.plan.streams),
                              "positions": positions,
                              "ranks": [state for _, state, _ in parts]},
                     "rng": [rng for _, _, rng in parts]}
        try:
            checkpoint = self.checkpoint()
        finally:
            self._mid = None
        best = self.best.dev.get("gauc") if self.best.state is not None else None
        self.session.report({"epoch_in_progress": progress.epoch, "step": progress.steps, "mid_epoch": True, "final": False,
                             "dev_gauc": float("nan") if best is None else best,
                             "placement_group": self.session.placement_group()}, checkpoint)
        self._last_checkpoint = time.monotonic()

    def evaluate(self, split: str):
        # state not trained by gradients (STAR's running statistics) differs between workers:
        # score every row with rank 0's, so the merged metrics are one model's
        if self.averager is not None:
            self.averager.broadcast_buffers(self.model)
        return super().evaluate(split)

    def merge_eval(self, sums: EvalSums) -> EvalSums:
        import torch.distributed as dist

        if self.world == 1 or not dist.is_initialized():
            return sums
        from adasparse.metrics import CTRMetrics

        parts: list = [None] * self.world
        dist.all_gather_object(parts, (sums.metrics.state(), sums.pruned, sums.rows, sums.domain_pruned, sums.masks))
        return EvalSums.merge([EvalSums(CTRMetrics.from_states([m]), p, r, d, k) for m, p, r, d, k in parts])

    def epoch_extras(self) -> dict:
        import torch

        return {"grad_sync_phases_s": self.averager.reset_timings() if self.averager is not None else {},
                "threads": torch.get_num_threads()}

    def on_progress(self, epoch: int, rows: int, elapsed_s: float, loss: float, wait_s: float) -> None:
        if self.rank != 0:
            return
        total = self.progress.rows_all if self.progress is not None else rows * self.world  # every worker's rows
        # sys.stdout, not print: Ray Train's patched print would emit every line twice
        sys.stdout.write(f"[train] epoch {epoch}: {total:,} rows, {total / elapsed_s:,.0f} rows/s, loss {loss:.4f}, "
                         f"waiting for data {100 * wait_s / elapsed_s:.0f}% of the time\n")
        sys.stdout.flush()

    def on_epoch_end(self, record: dict, improved: bool) -> None:
        checkpoint = self.checkpoint()
        self._last_checkpoint = time.monotonic()
        metrics = {k: v for k, v in record.items() if k not in ("sparsity", "grad_sync_phases_s")}
        self.session.report(metrics | {"final": False, "placement_group": self.session.placement_group()}, checkpoint)
        fail = self.cfg.fail
        if fail is not None and fail.epoch == record["epoch"] and self.rank == self.world - 1 and not os.path.exists(fail.marker):
            open(fail.marker, "w").close()  # fault injection (tests): this worker dies once, after the checkpoint
            os._exit(1)


def across_domains(result) -> dict | None:
    """How r^l varies between the test domains: per pruned layer, the min, mean and max of the
    domains' sparsity (each domain weighted once) — the spread of the structures AdaSparse learned."""
    ds = result.domain_sparsity
    if ds is None or not len(ds.keys):
        return None
    m = ds.mean
    return {"domains": int(len(ds.keys)), "min": m.min(0).tolist(), "mean": m.mean(0).tolist(), "max": m.max(0).tolist()}


def worker_stream(cfg: WorkerConfig, epoch: int, rank: int, world: int, resume: dict | None, vocab):
    """This worker's :class:`pipelines.data.train_stream.WorkerStream` for ``epoch``: the epoch dealt to
    as many streams as workers, or — resuming a mid-epoch checkpoint of this epoch — to the
    checkpoint's streams, each from its saved position (stream ``s`` read by worker ``s mod world``)."""
    from pipelines.data.train_stream import EpochPlan, WorkerStream

    seed, window = cfg.train.seed, cfg.ingest.shuffle_buffer
    streams = world if resume is None else resume["streams"]
    plan = EpochPlan.make(cfg.data.pieces, seed, epoch, streams, window)
    return WorkerStream(cfg.data.reader(vocab), plan, cfg.data.pieces, seed=seed, streams=plan.owned(rank, world),
                        batch_size=cfg.train.batch_size, start=None if resume is None else resume["positions"], shuffle=window > 0)


def resume_point(cfg: WorkerConfig, vocab, session, say) -> tuple[dict, dict] | None:
    """(tensors, record) of the checkpoint this worker group goes on from — a rerun of the same
    run name, or a restart — or None for a fresh start; refuses a checkpoint of other ids."""
    from adasparse.config import ConfigError
    from pipelines.train.checkpoints import newest_checkpoint, read_resumable

    checkpoint = session.get_checkpoint()
    if checkpoint is None and cfg.resume_from_run_dir:  # Ray's list of checkpoints was set aside, or is not there
        # (only then: a directory Ray never registered may be half-written; read_resumable falls back)
        checkpoint = newest_checkpoint(*session.storage())
    resumed = read_resumable(checkpoint, session.device, say)  # an unreadable newest checkpoint: the one before
    if resumed is not None and resumed[1].get("vocabulary") not in (None, vocab.fingerprint()):
        raise ConfigError(f"the run's vocabulary.json (ids {vocab.fingerprint()}) does not match its checkpoint's "
                          f"(ids {resumed[1]['vocabulary']}): restore the file or start a run of another name")
    return resumed


def build_runner(cfg: WorkerConfig, vocab, session) -> RayTrainRunner:
    """The model (STAR: the vocabulary's train domains own their rows), the exchange, the
    optimiser and this worker's threads, as a :class:`RayTrainRunner`."""
    import torch

    from adasparse.distributed import GradientAverager
    from adasparse.model import build_model
    from adasparse.optim import build_optimizer

    from adasparse.distributed.sharded_state import shard_embeddings

    device, world = session.device, session.world
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, vocab).to(device)
    shard_embeddings(model, cfg.optim, cfg.train.seed, device)  # model.embedding.sharding: on the process group
    model.check_ids = False  # ids come from the encoder: always inside their buckets
    model.clock_in_forward = False  # the schedules advance by each update's rows of all workers (the exchange's)
    node = session.node_id()
    torch.set_num_threads(cfg.resources.threads or node_threads(session.local_world, cfg.node_cpus.get(node)))
    # a step touches at most batch × fields table rows: with that bound small exchanges take one collective
    averager = GradientAverager(model, max_rows=model.table_rows_per_step(cfg.train.batch_size)) if world > 1 else None
    opt = build_optimizer(model, cfg.optim)
    return RayTrainRunner(model, opt, cfg, rank=session.rank, world=world, averager=averager, vocab=vocab, session=session)


def final_figures(runner: RayTrainRunner, result, test, exchange: str) -> dict:
    """The run's closing record: best epoch, dev and test figures, sparsity, speed, restarts and
    the per-domain test rows (Fig. 3 of the paper reads them)."""
    import torch
    import torch.distributed as dist

    per = test.domains.per_domain()
    spars = {}
    if test.domain_sparsity is not None:
        ds = test.domain_sparsity
        spars = dict(zip(ds.keys.tolist(), ds.mean.tolist()))
    samples = torch.tensor([runner.rows_trained, runner.train_seconds], dtype=torch.float64)
    if runner.world > 1 and dist.is_initialized():
        dist.all_reduce(samples)
    sharding = None
    if runner.sharded is not None:  # where the tables went, and what each worker holds of them
        held: list = [None] * runner.world
        dist.all_gather_object(held, runner.sharded.local_bytes())
        sharding = {"kind": runner.model.cfg.embedding.sharding, "plan": runner.sharded.plan,
                    "optimizer": runner.sharded.optimizer.kind, "table_bytes_per_worker": held}
    return {
        "best_epoch": result.best_epoch,
        "dev": result.dev.metrics,
        "test": test.metrics,
        "sparsity": {"dev": result.dev.sparsity, "test": test.sparsity, "test_across_domains": across_domains(test)},
        "samples_per_s": float(samples[0] / max(samples[1] / runner.world, 1e-9)) if samples[1] > 0 else None,
        "grad_exchange": exchange,
        "sharded_tables": sharding,
        "domains": {"unseen_rows": {"dev": runner.unseen_rows("dev"), "test": runner.unseen_rows("test")}},
        "history": runner.history,
        "restarts": runner.restarts,
        "test_per_domain": [
            {"domain": int(d), "rows": int(r), "ctr": float(c), "auc": None if np.isnan(a) else float(a),
             **({"sparsity": spars[int(d)]} if int(d) in spars else {})}
            for d, r, c, a in zip(per.domain, per.rows, per.ctr, per.auc)
        ],
    }


def train_loop(cfg: WorkerConfig, session=None) -> None:
    """The function every Ray Train worker runs (``cfg``: :func:`pipelines.train.driver.worker_config`);
    ``session``: who runs it (:mod:`pipelines.train.session`; default: Ray Train's worker)."""
    from pipelines.train.attempts import record_attempt
    from pipelines.train.checkpoints import mask_arrays, mask_domains

    entered = time.time()  # the run's timeline (metrics.json "timeline"): wall-clock stamps of the worker's stages
    if session is None:
        from pipelines.train.session import RayTrainSession

        _quiet_report_log()
        session = RayTrainSession()
    rank = session.rank

    def say(line: str) -> None:
        if rank == 0:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    vocab = cfg.vocabulary()
    resumed = resume_point(cfg, vocab, session, say)
    start = 1 if resumed is None else resumed[1]["epoch"] + 1
    runner = build_runner(cfg, vocab, session)
    if resumed is not None:
        runner.load_state(*resumed)
    if start <= cfg.train.epochs:  # the first epoch's stream starts now, while the process group and the exchange are set up
        runner.start_first_epoch(start)
    if rank == 0:  # this start of the worker group, recorded: restarts counted, the training they redid measured
        runner.restarts = record_attempt(*session.storage(), cfg.launch, start, None if resumed is None else resumed[1])
    if runner.averager is not None:
        runner.averager.broadcast_parameters(runner.model)
    fit_at = time.time()
    result = runner.fit()  # restores the best epoch's weights
    fitted_at = time.time()
    exchange = "none (one worker)"
    if runner.averager is not None:
        exchange = runner.averager.transport
        runner.averager.close()
    runner.mask_domains = mask_domains(vocab)  # Fig. 3(a): mean masks of the largest train domains
    test = runner.evaluate("test")
    final = final_figures(runner, result, test, exchange)
    final["clock"] = {"worker_entered": entered, "epochs_started": fit_at, "epochs_ended": fitted_at, "tested": time.time()}
    # The final report carries a checkpoint (the best epoch's weights and every final figure,
    # per-domain rows included) so the driver reads them from storage, not from the metrics
    # stream; its reported metrics stay small. Rerunning a finished run re-evaluates from it.
    checkpoint = runner.checkpoint(final, test.domains.state(), mask_arrays(test, runner.model))
    # no "epoch" key: an epoch-based scheduler (ASHA in adasparse tune) must not read this as one
    session.report({"final": True, "best_epoch": result.best_epoch, "dev_gauc": result.dev.metrics["gauc"],
                    "test_gauc": test.metrics["gauc"]}, checkpoint)


__all__ = ["RayTrainRunner", "node_threads", "train_loop"]
