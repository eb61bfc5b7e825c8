"""The distributed training job (Ray Train ``TorchTrainer``, data parallel): the driver.

    adasparse train --data DIR/spec.yaml --model adasparse --pruner.formulation fusion --workers 2 --out runs
    adasparse train --config run.yaml        # the same keys in YAML (pipelines/train/job_config.py)
    python -m pipelines.train ...            # the same, e.g. under ``ray job submit``

The driver reads the dataset spec, cuts the train/dev/test split by time, and starts the
workers (:mod:`pipelines.train.worker`: the library's training loop with Ray's shards, gradient
exchange, metric merge and reports) — or, for one worker on a small dataset that needs no
failure recovery, runs that loop itself (``resources.trainer``, :func:`trainer_kind`;
:mod:`pipelines.train.session`). Each epoch's dev LogLoss/AUC/GAUC is exact over all rows; the
best epoch by dev GAUC is evaluated on test at the end and written with everything else to
``OUT/NAME/metrics.json`` (and the config to ``config.json``).

Resume: rerunning with the same ``--name`` (and ``--out``) continues from the run's latest
checkpoint (Ray Train's run snapshot); with ``--max-failures`` > 0 a dead worker makes the
run restart from the last checkpoint (``--fail-at-epoch`` injects such a failure once).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
import time
import uuid
from dataclasses import dataclass, field

# torch is loaded before Ray starts and before Ray Data's threads: loaded later in the driver of
# a `ray job submit` on a fake multi-node cluster, oneMKL failed to load libtorch_cpu.so
import torch

from adasparse.config import ConfigError
from adasparse.vocabulary import DomainVocabulary, with_domain_rows
from pipelines.data.sources import DataSource
from pipelines.data.spec import DatasetSpec
from pipelines.data.splits import TimeCuts
from pipelines.runtime.leaked_groups import freeing_leaked_groups
from pipelines.runtime.output_location import OutputLocation
from pipelines.train.job_config import JobConfig, dump_config
from pipelines.train.job_flags import parse_job_args
from pipelines.train.worker_config import FaultInjection, TrainData, WorkerConfig


def node_cpus() -> dict[str, float]:
    """Every live node's Ray CPU resource, read once by the driver (one GCS call for the whole
    run, not one per worker); a node that joins later is looked up as unknown."""
    import ray

    return {n["NodeID"]: n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive", True)}


STARTUP_ATTEMPT_S = 60.0  # Ray Train's wait for a worker group before it retries (RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S)


def _request(job: JobConfig, per_worker: float) -> str:
    """The workers' request in words: ``4 workers × 1 CPU + 1 GPU``."""
    return f"{job.resources.workers} workers × {per_worker:g} CPU{' + 1 GPU' if job.resources.gpu else ''}"


def check_resources(job: JobConfig, per_worker: float, cluster: dict, fixed_size: bool, log) -> int:
    """The workers' request against the cluster. On a cluster that cannot grow (the private local
    Ray) a request larger than it is one line now, instead of a wait that never ends; on a cluster
    given by address (it may autoscale) the wait is bounded by ``resources.startup_timeout_s``.
    Returns the number of worker-group start attempts Ray Train may make."""
    res = job.resources
    cpus, gpus = float(cluster.get("CPU", 0)), float(cluster.get("GPU", 0))
    need_cpu, need_gpu = res.workers * per_worker, res.workers if res.gpu else 0
    short = need_cpu > cpus + 1e-9 or need_gpu > gpus + 1e-9
    what = _request(job, per_worker)
    have = f"{cpus:g} CPUs" + (f", {gpus:g} GPUs" if res.gpu else "")
    if short and fixed_size:
        raise ConfigError(f"resources: {what} do not fit this machine's local Ray ({have}); lower --workers or "
                          "--cpus-per-worker, or give --address of a larger cluster")
    if short:
        log(f"the cluster has {have} now; waiting up to {res.startup_timeout_s:.0f} s for it to grow to {what}")
    return max(1, math.ceil(res.startup_timeout_s / STARTUP_ATTEMPT_S))


def fit_interruptibly(trainer):
    """``trainer.fit()``, stopped by Ctrl-C at any moment. Ray Train's own SIGINT handler asks
    its controller to abort and waits for it, which takes as long as the controller's current
    step (a minute while it waits for workers' resources) and then exits with status 0; so in
    the main thread the fit runs in a thread of its own and Ctrl-C ends the command at once with
    one line and status 130: the run's actors and placement group are released with the driver,
    and its last checkpoint stays for a rerun to resume."""
    from adasparse.errors import Interrupted

    if threading.current_thread() is not threading.main_thread():  # e.g. a Tune trial
        return trainer.fit()
    box: dict = {}

    def target() -> None:
        try:
            box["result"] = trainer.fit()
        except BaseException as err:  # noqa: BLE001 - handed to the main thread
            box["error"] = err

    thread = threading.Thread(target=target, name="adasparse-fit", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.2)
    except KeyboardInterrupt:
        raise Interrupted("interrupted (Ctrl-C): the run stops here; its last checkpoint stays, and the same command "
                          "resumes it") from None
    if "error" in box:
        raise box["error"]
    return box["result"]


def check_model_for(job: JobConfig, data) -> None:
    """The model's options that depend on the data's fields (e.g. ``pepnet.persona_fields``),
    checked before Ray starts: one line naming the option."""
    from pydantic import ValidationError

    from adasparse.config import format_validation_error

    try:
        job.model_for(data.features)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, "options").replace("options: ", "options: model.", 1)) from None


def startup_error(err: BaseException, job: JobConfig, per_worker: float) -> ConfigError | None:
    """The one line for a run whose workers never got their resources (Ray Train's worker-group
    start timed out on every attempt); None for any other error."""
    from adasparse.errors import wrapped_errors

    for e in wrapped_errors(err):
        if type(e).__name__ == "WorkerGroupStartupTimeoutError" or "worker group startup timed out" in str(e):
            return ConfigError(f"resources: {_request(job, per_worker)} could not be placed within "
                               f"{job.resources.startup_timeout_s:.0f} s (resources.startup_timeout_s); "
                               "the cluster did not grow to fit them")
    return None


def cpus_per_worker(job: JobConfig, cluster_cpus: float) -> float:
    """CPUs each worker reserves: given, 1 with a GPU, else the cluster's CPUs less about one
    for Ray Data's read/encode tasks (without it the workers starve ingest forever), shared."""
    res = job.resources
    if res.cpus_per_worker is not None:  # e.g. on an autoscaling cluster: ask, and nodes are added to fit
        return res.cpus_per_worker
    if res.gpu:
        return 1.0
    return max(0.1, min(1.0, (cluster_cpus - 1) / res.workers))


VOCABULARY_FILE = "vocabulary.json"


def run_vocabulary(out: OutputLocation, name: str, source, cuts, min_count: int, log):
    """The run's domain vocabulary: the one stored with the run (a rerun resumes with the same
    ids), else built from the train split and stored before training starts."""
    from pipelines.data.vocabulary_pass import build_vocabulary

    path = out.join(name, VOCABULARY_FILE)
    if out.fs.exists(path):
        vocab = DomainVocabulary.from_json(out.fs.cat(path).decode(), out.url(path))
        if vocab.min_count != min_count:
            raise ConfigError(f"{out.url(path)}: built with domain_min_count {vocab.min_count}, not {min_count}; "
                              "use another --name for a new run")
        vocab.features(source.spec.features)  # the data's domain fields must be the vocabulary's
        return vocab
    t0 = time.perf_counter()
    vocab = build_vocabulary(source, cuts, min_count)
    out.write_text(path, vocab.to_json())
    sizes = ", ".join(f"{f.name} {len(f.values):,}" for f in vocab.fields)
    log(f"{name}: domain vocabulary from the train split in {time.perf_counter() - t0:.1f} s: {sizes} values; "
        f"{vocab.train_tuples:,} domains, {vocab.distinguished:,} told apart")
    return vocab


@dataclass
class PreparedData:
    """The data side of a run, ready before Ray Train starts: the spec, its files, the split's
    time cuts, the run's domain vocabulary and where results go."""

    spec: DatasetSpec
    source: DataSource
    out: OutputLocation
    cuts: TimeCuts | None
    vocab: DomainVocabulary
    set_aside: bool  # Ray's list of checkpoints was unreadable and set aside (or is not there)
    trainer: str  # who trains: "in_process" or "ray_train" (trainer_kind)
    # wall-clock stamps of the preparation's stages (the run's timeline, see :func:`timeline`)
    clock: dict[str, float] = field(default_factory=dict)


def _import_trainer(trainer: str) -> None:
    with contextlib.suppress(Exception):  # a failing import fails again, with its error, where it is used
        if trainer == "ray_train":
            import ray.data  # noqa: F401 - the time split's first need
            import ray.train.torch  # noqa: F401
        else:
            # PyTorch imports its compiler on the first optimiser built (torch._disable_dynamo): 1.3 s
            import torch._dynamo  # noqa: F401
        import pipelines.train.worker  # noqa: F401


def import_trainer_meanwhile(trainer: str = "ray_train") -> None:
    """Import Ray Data and Ray Train's trainer (in process: PyTorch's compiler, which the first
    optimiser imports) and the worker's module (PyTorch itself is loaded first, see the imports
    above) in a thread while Ray starts and the data is read, which mostly wait on other
    processes or run outside Python's lock; the build of the trainer then finds them imported
    (Python's import lock makes the two imports one)."""
    threading.Thread(target=_import_trainer, args=(trainer,), name="adasparse-import", daemon=True).start()


def prepare_data(job: JobConfig, log, in_trial: bool = False) -> tuple[PreparedData, bool]:
    """The spec, the output, the run's identity, who trains (:func:`trainer_kind`), Ray, the
    check of every file, the split and the vocabulary — every user error a line before Ray
    Train starts. Also returns whether the Ray this run uses is its own private local one (it
    cannot grow). A run trained in this process (its passes read here:
    :mod:`pipelines.data.inline_read`) starts no Ray at all."""
    from pipelines.data.inline_read import reads_inline
    from pipelines.data.sources import open_source
    from pipelines.data.spec import load_spec
    from pipelines.data.time_split import time_cuts
    from pipelines.train.checkpoints import set_aside_unreadable_snapshot, unlisted_checkpoints
    from pipelines.train.run_identity import check_run_identity, run_identity

    data = load_spec(job.data)
    if job.ingest.domain_fields is not None:  # another partition of the same data into domains
        data = data.with_domain_fields(job.ingest.domain_fields, "ingest.domain_fields")
    clock = {"started": time.time()}
    source = open_source(data)
    clock["listed"] = time.time()
    small = reads_inline(source)  # the passes read in this process
    trainer = trainer_kind(job, in_trial, small=small)
    check_model_for(job, data)
    out = OutputLocation.of(job.output.dir, job.output.storage_endpoint)
    out.check_writable()
    # a rerun of OUT/NAME must be the same run (its data and result-changing options)
    check_run_identity(out, job.run_name, run_identity(dump_config(job), data, source), log)
    # no address and no Ray yet: the private local Ray this run starts, which cannot grow
    fixed_size = not ray_is_up() and not (job.resources.address or os.environ.get("RAY_ADDRESS"))
    clock["identified"] = time.time()
    if trainer == "ray_train" or not small:
        import ray

        from pipelines.runtime.ray_env import init_ray

        init_ray(job.resources.address)
        clock["ray_up"] = time.time()
        if job.resources.gpu and trainer == "ray_train" and not ray.cluster_resources().get("GPU"):
            raise ConfigError("--gpu: the Ray cluster has no GPU")
    if job.ingest.check_data:  # bad rows found now, in one line, not an epoch into the run
        check_every_file(job, source, log)
        clock["checked"] = time.time()
    cuts = time_cuts(source) if data.split_files is None else None
    clock["split"] = time.time()
    out.fs.makedirs(out.join(job.run_name), exist_ok=True)
    vocab = run_vocabulary(out, job.run_name, source, cuts, job.ingest.domain_min_count, log)
    clock["vocabulary"] = time.time()
    set_aside = set_aside_unreadable_snapshot(out, job.run_name, log) or unlisted_checkpoints(out, job.run_name)
    return PreparedData(data, source, out, cuts, vocab, set_aside, trainer, clock), fixed_size


def check_every_file(job: JobConfig, source: DataSource, log) -> None:
    """Every file's labels, times and numerics (:mod:`pipelines.data.validation`): the first
    problem as one line, before any worker starts."""
    from pipelines.data.validation import validate_source

    t0 = time.perf_counter()
    report = validate_source(source)
    report.raise_if_bad(job.data)
    log(f"{job.run_name}: {report.rows:,} rows in {len(report.files)} files checked in {time.perf_counter() - t0:.1f} s")


def worker_config(job: JobConfig, prep: PreparedData, with_nodes: bool = True) -> WorkerConfig:
    """What every worker receives (:class:`WorkerConfig`): the job's typed parts, the model with
    the data's features (and STAR's per-domain rows from the vocabulary), the train split's
    pieces each worker deals itself a share of."""
    from pipelines.data.splits import split_bounds
    from pipelines.data.train_stream import TrainPieces
    from pipelines.train.eval_reader import EVAL_SPLITS

    vocab, name = prep.vocab, job.run_name
    bounds = split_bounds(prep.source, "train", prep.cuts)
    fail = None
    if job.faults.fail_at_epoch:
        fail = FaultInjection(job.faults.fail_at_epoch, prep.out.fault_marker(name))
    return WorkerConfig(
        model=with_domain_rows(job.model_for(vocab.features(prep.spec.features)), vocab),
        optim=job.optim, train=job.train, ingest=job.ingest, resources=job.resources, faults=job.faults,
        data=TrainData(TrainPieces.of(prep.source, "train", bounds), prep.spec, prep.source.fs, tuple(bounds)),
        eval_data={s: split_data(prep, s) for s in EVAL_SPLITS},
        vocabulary_json=vocab.to_json(), train_rows=vocab.train_rows, launch=uuid.uuid4().hex,
        resume_from_run_dir=prep.set_aside, node_cpus=node_cpus() if with_nodes and job.resources.threads is None else {}, fail=fail)


def split_data(prep: PreparedData, split: str) -> TrainData:
    """A split's pieces, spec, filesystem and time range, as the workers read it."""
    from pipelines.data.splits import split_bounds
    from pipelines.data.train_stream import TrainPieces

    bounds = split_bounds(prep.source, split, prep.cuts)
    return TrainData(TrainPieces.of(prep.source, split, bounds), prep.spec, prep.source.fs, tuple(bounds))


def build_trainer(job: JobConfig, prep: PreparedData, cfg: WorkerConfig, per_worker: float, attempts: int,
                  callbacks: list | None):
    """The ``TorchTrainer``: every worker runs :func:`pipelines.train.worker.train_loop` and reads
    its own train stream and its share of dev and test (:mod:`pipelines.train.eval_reader`): no
    Ray dataset."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pipelines.train.worker import train_loop

    res = job.resources
    return TorchTrainer(
        train_loop,
        train_loop_config=cfg,
        scaling_config=ScalingConfig(num_workers=res.workers, use_gpu=res.gpu, resources_per_worker={"CPU": per_worker}),
        run_config=RunConfig(
            name=job.run_name,
            storage_path=prep.out.root,
            storage_filesystem=prep.out.arrow_fs(),
            # the newest K: every checkpoint holds the best epoch's weights beside the latest
            checkpoint_config=CheckpointConfig(num_to_keep=job.faults.keep_checkpoints),
            failure_config=FailureConfig(max_failures=job.faults.max_failures, controller_failure_limit=attempts),
            callbacks=list(callbacks or []),
        ),
    )


# Ray Train's controller takes at most one report per worker per poll of its workers, and polls
# every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (default 2 s); a worker's next report waits until the
# last one is taken. Runs that report more often (short epochs, a sweep's trials) were held back by
# the poll, and the fit ended only after the queued reports were taken, one per poll.
CONTROLLER_POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"


def controller_poll(seconds: float):
    """The controller's poll interval while a fit runs: the trainer hands this variable from the
    fitting process's environment to the controller it starts (Ray Train's env propagation)."""
    from pipelines.runtime.ray_env import environ

    return environ(CONTROLLER_POLL_ENV, repr(float(seconds)))


def fit(trainer, job: JobConfig, source: DataSource, per_worker: float, log):
    """The fit's result; a startup wait that ran out or unreadable data as one line."""
    from pipelines.data.validation import locate_read_error

    # a sweep's driver watches for its trials; a run on its own watches for itself
    watch = freeing_leaked_groups(log) if threading.current_thread() is threading.main_thread() else contextlib.nullcontext()
    try:
        with watch, controller_poll(job.faults.controller_poll_s):
            result = fit_interruptibly(trainer)
    except Exception as err:  # translated only when it is the startup wait or unreadable data
        found = startup_error(err, job, per_worker) or locate_read_error(source, err)
        if found is None:
            raise
        raise found from None
    if result.error:
        raise startup_error(result.error, job, per_worker) or locate_read_error(source, result.error) or result.error
    return result


def ray_is_up() -> bool:
    """This process is connected to Ray (without importing Ray when it is not)."""
    import sys

    # the import thread may be importing Ray right now: a module without is_initialized yet is not up
    up = getattr(sys.modules.get("ray"), "is_initialized", None)
    return bool(up and up())


def trainer_kind(job: JobConfig, in_trial: bool = False, small: bool = True) -> str:
    """Who runs the workers (``resources.trainer``): ``in_process`` or ``ray_train``. ``auto`` is
    in process for one worker that needs no worker-failure recovery (``faults.max_failures`` 0,
    no injected failure, replicated tables) on a ``small`` dataset (its passes read in process:
    :func:`pipelines.data.inline_read.reads_inline`, where start-up costs count), run where its
    process is placed: a command on its private local Ray, or a sweep's trial (Tune placed it
    with the worker's resources); else Ray Train, which also keeps a large run's driver apart
    from its worker's memory. A run may change between them when it resumes (the checkpoints
    are the same)."""
    res, faults = job.resources, job.faults
    alone = res.workers == 1 and faults.max_failures == 0 and faults.fail_at_epoch is None
    replicated = job.model.embedding.sharding == "replicated"
    if res.trainer == "in_process":
        why = ("resources.workers is not 1" if res.workers != 1 else
               "faults.max_failures > 0 needs Ray Train to restart its worker" if faults.max_failures else
               "faults.fail_at_epoch injects a worker failure" if faults.fail_at_epoch is not None else
               "model.embedding.sharding needs a process group of workers" if not replicated else None)
        if why:
            raise ConfigError(f"resources.trainer in_process: {why}; use resources.trainer ray_train (or auto)")
        return "in_process"
    if res.trainer == "ray_train":
        return "ray_train"
    private = not (res.address or os.environ.get("RAY_ADDRESS")) and not ray_is_up()
    return "in_process" if alone and replicated and small and (in_trial or private) else "ray_train"


def fit_in_process(job: JobConfig, prep: PreparedData, cfg: WorkerConfig, on_report=None):
    """The run's one worker trained here (:class:`pipelines.train.session.InProcessSession`);
    the last checkpoint it persisted (the final one, as Ray Train's fit result holds it)."""
    from pyarrow.fs import LocalFileSystem

    from adasparse.errors import Interrupted
    from pipelines.data.validation import locate_read_error
    from pipelines.train.session import InProcessSession
    from pipelines.train.worker import train_loop

    if job.resources.gpu and not torch.cuda.is_available():
        raise ConfigError("--gpu: this process sees no GPU (CUDA)")
    device = torch.device("cuda" if job.resources.gpu else "cpu")
    fs = prep.out.arrow_fs() or LocalFileSystem()
    session = InProcessSession(fs, prep.out.join(job.run_name), job.faults.keep_checkpoints, device, on_report)
    threads = torch.get_num_threads()
    try:
        train_loop(cfg, session)
    except KeyboardInterrupt:
        raise Interrupted("interrupted (Ctrl-C): the run stops here; its last checkpoint stays, and the same command "
                          "resumes it") from None
    except Exception as err:  # unreadable data as one line naming the file
        found = locate_read_error(prep.source, err)
        if found is None:
            raise
        raise found from None
    finally:
        torch.set_num_threads(threads)  # the worker sets its own: this process's are given back
    return session.latest


def run(job: JobConfig, log=print, callbacks: list | None = None, cpu_budget: float | None = None,
        in_trial: bool = False, on_report=None, started_at: float | None = None) -> dict:
    """Train, pick the best epoch, test it, write ``OUT/NAME/metrics.json``; returns its content.

    ``callbacks``: extra Ray Train callbacks (``adasparse tune`` forwards reports to Tune);
    ``cpu_budget``: CPUs this run may use (default: the whole cluster); ``in_trial``: the run is
    a sweep's trial, whose reports go to ``on_report`` when it trains in process; ``started_at``:
    the origin of the run's timeline (default: its process's start; a sweep's later trials in
    a reused process: the trial's start)."""
    from pipelines.train.checkpoints import read_final

    import_trainer_meanwhile(trainer_kind(job, in_trial))  # a first guess: the data's size decides (prepare_data)
    prep, fixed_size = prepare_data(job, log, in_trial)
    trainer = prep.trainer
    prepared = time.time()
    if trainer == "in_process":
        cfg = worker_config(job, prep, with_nodes=False)
        t0, fit_at = time.perf_counter(), time.time()
        checkpoint = fit_in_process(job, prep, cfg, on_report)
    else:
        import ray

        per_worker = cpus_per_worker(job, cpu_budget or ray.cluster_resources().get("CPU", 1))
        attempts = check_resources(job, per_worker, ray.cluster_resources(), fixed_size, log)
        cfg = worker_config(job, prep)
        trainer_obj = build_trainer(job, prep, cfg, per_worker, attempts, callbacks)
        t0, fit_at = time.perf_counter(), time.time()
        checkpoint = fit(trainer_obj, job, prep.source, per_worker, log).checkpoint
    final = read_final(checkpoint)
    final["best_checkpoint"] = prep.out.url(checkpoint.path)
    final["wall_s"] = time.perf_counter() - t0
    final["trainer"] = trainer
    final["timeline"] = timeline(final.pop("clock", None), prepared, fit_at, time.time(), prep.clock, started_at)
    final["domains"] = {**prep.vocab.summary(), **final.pop("domains", {})}
    final["config"] = dump_config(job)
    final["model_config"] = cfg.model.model_dump(mode="json")
    write_results(job, prep, final, log)
    return final


def process_started_at() -> float:
    """When this process started (wall clock, to ~10 ms): its age from ``/proc`` taken from now.
    (psutil's ``create_time`` adds the boot time, which Linux keeps in whole seconds: up to 1 s
    off, which showed as a negative exit time in the fixed-cost table.)"""
    try:
        with open("/proc/self/stat") as fh:
            start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        return time.time() - (uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):  # not Linux
        import psutil

        return psutil.Process().create_time()


def timeline(clock: dict | None, prepared: float, fit_at: float, fitted: float, prep: dict | None = None,
             start: float | None = None) -> dict:
    """Where a run's wall time went, in seconds since its process started (the command, or a
    sweep's trial). The preparation's stages (``prep``): ``started`` (imports done, the spec
    read), ``listed`` (files listed, footers read), ``identified`` (the output checked, the run's
    identity), ``ray_up``, ``checked`` (every file validated; absent with the check off),
    ``split`` (the time split's cuts), ``vocabulary`` (the domain vocabulary); then
    ``prepared``, the trainer's ``fit_started``, the worker's ``worker_entered`` (the worker
    group up), ``epochs_started``/``epochs_ended`` and ``tested``, then ``fit_ended`` (the
    driver has the result). Worker stamps are of the last attempt; the per-epoch costs are in
    ``history`` (``train_s``, ``dev_eval_s``, ``epoch_end_s``: the report and checkpoint)."""
    start = process_started_at() if start is None else start
    stamps = {**(prep or {}), "prepared": prepared, "fit_started": fit_at, **(clock or {}), "fit_ended": fitted}
    return {k: round(v - start, 3) for k, v in stamps.items()}


def write_results(job: JobConfig, prep: PreparedData, final: dict, log) -> None:
    """``metrics.json``, ``config.json`` and the data spec (for export and predict) in the run's
    directory; a line per restart and the run's closing line."""
    from pipelines.runtime.run_directory import DATA_SPEC_FILE

    out, name = prep.out, job.run_name
    out.write_text(out.join(name, "metrics.json"), json.dumps(final, indent=2, default=str))
    out.write_text(out.join(name, "config.json"), json.dumps(dump_config(job), indent=2))
    out.write_text(out.join(name, DATA_SPEC_FILE), json.dumps(prep.spec.model_dump(mode="json"), indent=2))
    for r in final.get("restarts", []):
        if r["kind"] == "worker_failure":
            where = f"its epoch-{r['from_epoch'] - 1} checkpoint" if r["from_epoch"] > 1 else "the start (no checkpoint yet)"
            if r.get("from_step"):
                where = f"its checkpoint at update {r['from_step']:,} of epoch {r['from_epoch']}"
            log(f"{name}: a worker failed; the run went on from {where}, redoing {r['lost_s']:.1f} s of training "
                "(with the failure's detection and the restart)")
    t, d = final["test"], final["dev"]
    speed = f"{final['samples_per_s']:,.0f} samples/s" if final.get("samples_per_s") else "resumed after training"
    log(f"{name}: best epoch {final['best_epoch']}  dev GAUC {d['gauc']:.4f}  test logloss {t['logloss']:.5f} "
        f"AUC {t['auc']:.4f} GAUC {t['gauc']:.4f}  ({speed})  -> {out.url(out.join(name, 'metrics.json'))}")


def main(argv: list[str] | None = None) -> int:
    from pipelines.runtime.exit_status import run_command

    def body() -> None:
        run(parse_job_args(argv))

    return run_command("adasparse train", body)


if __name__ == "__main__":
    from pipelines.runtime.exit_status import exit_process

    exit_process(main())
