"""``adasparse predict --run RUN_DIR --data SPEC --out DIR``: batch scoring on Ray Data.

The dataset's shards are read with the training job's reader and encoder
(:func:`pipelines.data.reading.read_split` with the run's vocabulary: the same ids as in training),
scored by the run's tested model, and written as Parquet. The driver loads the model once and
puts it in Ray's object store (:class:`pipelines.serve.shared_model.SharedModel`: the processes of a
node map one copy of the weights), so workers on any node score with it (the run directory need
not be visible to them).

* CPU (the default): scoring is a ``map_batches`` task fused with the read and the encoding, one
  task per shard, one CPU each, so no raw or encoded block crosses the object store; by default
  as many run at once as the cluster has CPUs (and the Parquet write fuses in too), or at most
  ``--workers`` (the write then runs as tasks of its own: Ray 2.60 fuses no capped write). The
  model is fetched once per Ray worker process (:func:`score_block`'s cache, keyed by the
  object's id), not once per shard.
* GPU (``--gpu``): an actor pool, one GPU and one model copy per actor (``--workers``, default
  the cluster's GPUs), fed by read tasks on the CPUs; a block goes only to a free actor.

Memory is bounded by Ray Data's streaming executor, not by the dataset. Each output row:
``domain`` (the run's domain key), ``label`` (when the data has it), ``probability``. Every
input row of the split is scored exactly once: the written rows are counted against the split's.
Why tasks and not an actor pool on CPU: measured in docs/serving.md.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

from adasparse.config import ConfigError
from pipelines.runtime.run_directory import RunFiles
from pipelines.serve.shared_model import SharedModel


class Scorer:
    """Encoded rows → domain key, label, probability, with the model of ``model_ref`` (an
    object-store reference to a :class:`SharedModel`); the map_batches callable of each GPU actor."""

    def __init__(self, model_ref, device: str = "cpu", batch_size: int = 4096):
        import ray
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.model = ray.get(model_ref).materialize().to(self.device)
        self.model.check_ids = False  # ids come from the run's own vocabulary and buckets

    def __call__(self, table: pa.Table) -> pa.Table:
        from pipelines.data.arrow_columns import arrow_to_columns

        cols = arrow_to_columns(table)
        torch = self.torch
        p = np.empty(len(cols["label"]), np.float32)
        with torch.inference_mode():  # a block in batches of batch_size rows: memory bounded by the batch
            for lo in range(0, len(p), self.batch_size):
                cat = torch.tensor(cols["cat_ids"][lo : lo + self.batch_size], device=self.device)  # Arrow's buffers are read-only
                num = torch.tensor(cols["numeric"][lo : lo + self.batch_size], device=self.device)
                z = self.model(cat, num if num.shape[1] else None).logits.float()
                p[lo : lo + self.batch_size] = torch.sigmoid(z).cpu().numpy()
        return pa.table({"domain": cols["domain"], "label": cols["label"], "probability": p})


_SCORERS: dict[str, Scorer] = {}  # per Ray worker process: the model of the latest predict call


def score_block(table: pa.Table, model_ref, batch_size: int) -> pa.Table:
    """map_batches function of CPU scoring (fused into the read task): ``table`` scored with
    the model in ``model_ref``, fetched once per worker process. One model is kept: a later call
    with another model (a new predict, another run) replaces it, so no stale model is used."""
    key = model_ref.hex()
    scorer = _SCORERS.get(key)
    if scorer is None:
        _SCORERS.clear()
        scorer = _SCORERS[key] = Scorer(model_ref, "cpu", batch_size)
    return scorer(table)


def check_features(run: RunFiles, spec) -> None:
    """The data's fields must be the run's: one line naming the first that differs."""
    feats = run.model_config().features
    want = {"domain field": [f.name for f in feats.domain_fields],
            "categorical field": [f.name for f in feats.categorical_fields],
            "numeric field": list(feats.numeric_fields)}
    have = {"domain field": [f.name for f in spec.domain_fields],
            "categorical field": [f.name for f in spec.categorical_fields],
            "numeric field": list(spec.numeric_fields)}
    for what in want:
        if want[what] != have[what]:
            missing = [n for n in want[what] if n not in have[what]]
            detail = f"{missing[0]!r} is missing" if missing else f"{have[what]} instead of {want[what]}"
            raise ConfigError(f"the data's {what}s do not match the run's: {detail}")
    buckets = {f.name: f.buckets for f in feats.categorical_fields}
    for f in spec.categorical_fields:
        if buckets[f.name] != f.buckets:
            raise ConfigError(f"categorical field {f.name!r}: {f.buckets} buckets in the data spec, {buckets[f.name]} in the run")


def predict(run_dir: str, data: str, out: str, *, split: str = "test", workers: int | None = None, batch_size: int = 4096,
            gpu: bool = False, address: str | None = None, overwrite: bool = False, storage_endpoint: str | None = None,
            log=print) -> dict:
    import ray

    from pipelines.data.reading import read_split
    from pipelines.data.sources import open_source
    from pipelines.data.spec import load_spec
    from pipelines.data.time_split import time_cuts
    from pipelines.runtime.ray_env import init_ray

    run = RunFiles(run_dir)
    model = run.load_model()  # a run without a loadable checkpoint fails here, in one line
    spec = load_spec(data)
    check_features(run, spec)
    if workers is not None and workers < 1:
        raise ConfigError("--workers must be at least 1")
    location = checked_output(out, storage_endpoint, overwrite)
    source = open_source(spec)
    init_ray(address)
    resources = ray.cluster_resources()
    if gpu and not resources.get("GPU"):
        raise ConfigError("--gpu: the Ray cluster has no GPU")
    units = int(resources.get("GPU" if gpu else "CPU", 1))
    # CPU: a cap below the cluster's CPUs only (uncapped, the dataset also grows onto nodes an
    # autoscaler adds, and Ray Data fuses the write into the scoring task)
    cap = workers if workers is not None and workers < units and not gpu else None
    cuts = time_cuts(source) if spec.split_files is None and split != "all" else None
    t0 = time.perf_counter()
    ds = read_split(source, split, cuts, vocab=run.vocab, concurrency=cap)
    scored = scored_dataset(ds, ray.put(SharedModel(model)), gpu=gpu, actors=workers or units, cap=cap, batch_size=batch_size)
    if overwrite and location.fs.exists(out):
        location.fs.rm(out, recursive=True)
    scored.write_parquet(out, filesystem=location.arrow_fs())
    wall = time.perf_counter() - t0
    rows, metrics = read_back(location, out)
    expected = expected_rows(source, split, cuts)
    if expected is not None and expected != rows:
        raise RuntimeError(f"{out}: {rows:,} predictions for {expected:,} rows of the {split} split")
    result = {"rows": rows, "wall_s": wall, "rows_per_s": rows / max(wall, 1e-9), "out": out, **metrics}
    how = (f"{workers or units} scoring actors" if gpu else f"at most {cap} scoring tasks at once" if cap
           else f"scoring tasks on the cluster's {units} CPUs")
    scores = f"; AUC {result['auc']:.4f} GAUC {result['gauc']:.4f}" if "auc" in result else ""
    log(f"predicted {result['rows']:,} rows of the {split} split in {wall:.1f} s ({result['rows_per_s']:,.0f} rows/s, "
        f"{how}) -> {out}{scores}")
    return result


def checked_output(out: str, storage_endpoint: str | None, overwrite: bool):
    """``--out`` as an :class:`OutputLocation`: writable, and empty unless ``overwrite``."""
    from pipelines.runtime.output_location import OutputLocation

    location = OutputLocation.of(out, storage_endpoint)
    if location.fs.exists(out) and location.fs.ls(out) and not overwrite:
        raise ConfigError(f"{out}: not empty; pass --overwrite to replace its predictions, or choose another --out")
    location.check_writable()
    return location


def scored_dataset(ds, model_ref, *, gpu: bool, actors: int, cap: int | None, batch_size: int):
    """``ds`` with a probability per row: scoring tasks on CPU, an actor per GPU with ``gpu``."""
    import ray

    # Ray Data's per-operator resource reservation is off: with it, on a small cluster, the
    # second task of the fused read-to-write operator started only as the first ended, and one
    # actor of a GPU-style pool scored while the others idled (docs/serving.md)
    ds.context.op_resource_reservation_enabled = False
    if gpu:
        # reads on the CPUs feed one actor per GPU; a block goes only to a free actor
        return ds.map_batches(Scorer, fn_constructor_args=(model_ref, "cuda", batch_size), batch_size=None,
                              batch_format="pyarrow", num_cpus=0, num_gpus=1,
                              compute=ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=1))
    # whole blocks (batch_size=None), a task like the read's, the read's cap: Ray Data fuses
    # read, encode and score into one task per shard (scored in batches of batch_size in
    # it), and the write too when uncapped. (Capped, Ray 2.60's fused score->write op loses
    # its cap, and ops of different caps never fuse: the read would stay apart instead.)
    return ds.map_batches(score_block, fn_args=(model_ref, batch_size), batch_size=None, batch_format="pyarrow",
                          concurrency=cap)


def expected_rows(source, split: str, cuts) -> int | None:
    """The rows ``split`` holds, where the footers and the time cuts say (None: unknown)."""
    if split == "all":
        return sum(source.rows) if all(n >= 0 for n in source.rows) else None
    return dict(zip(("train", "dev", "test"), cuts.rows)).get(split) if cuts is not None and cuts.rows else None


def read_back(location, out: str) -> tuple[int, dict]:
    """The written predictions, file by file: their rows, and AUC/GAUC/LogLoss where labels vary."""
    import pyarrow.parquet as pq

    from adasparse.metrics import CTRMetrics

    m, rows, pos = CTRMetrics(), 0, 0
    for path in sorted(location.fs.find(out)):
        if not path.endswith(".parquet"):
            continue
        with location.fs.open(path, "rb") as fh:
            t = pq.read_table(fh, columns=["domain", "label", "probability"])
        rows += t.num_rows
        y = t["label"].to_numpy()
        pos += int(y.sum())
        m.update(t["domain"].to_numpy(), y, probs=t["probability"].to_numpy())
    if not 0 < pos < rows:
        return rows, {}
    return rows, {k: v for k, v in m.compute().items() if k in ("auc", "gauc", "logloss")}


__all__ = ["Scorer", "check_features", "score_block", "predict", "read_back"]
