"""``adasparse predict --run RUN_DIR --data SPEC --out DIR``: batch scoring on Ray Data.

The dataset's shards stream through the training job's reader and encoder
(:func:`pipelines.reading.read_split` with the run's vocabulary: the same ids as in training) into
``map_batches`` on a pool of actors, each holding the run's tested model (loaded once per
actor); the scored blocks stream into Parquet files. Memory is bounded by Ray Data's streaming
executor, not by the dataset. Each output row: ``domain`` (the run's domain key), ``label`` (when
the data has it), ``probability``. Every input row of the split is scored exactly once: the
written rows are counted against the split's.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

from adasparse.config import ConfigError
from pipelines.run_files import RunFiles


class Scorer:
    """map_batches callable (one per actor): encoded rows → domain key, label, probability."""

    def __init__(self, run_dir: str, device: str = "cpu", batch_size: int = 4096):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.model = RunFiles(run_dir).load_model().to(self.device)
        self.model.check_ids = False  # ids come from the run's own vocabulary and buckets

    def __call__(self, table: pa.Table) -> pa.Table:
        from pipelines.arrow_columns import arrow_to_columns

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


def predict(run_dir: str, data: str, out: str, *, split: str = "test", workers: int = 2, batch_size: int = 4096,
            gpu: bool = False, address: str | None = None, overwrite: bool = False, log=print) -> dict:
    import ray

    from pipelines.output import OutputLocation
    from pipelines.ray_env import init_ray
    from pipelines.reading import read_split
    from pipelines.sources import open_source
    from pipelines.spec import load_spec
    from pipelines.time_split import time_cuts

    run = RunFiles(run_dir)
    run.load_model()  # a run without a loadable checkpoint fails here, in one line
    spec = load_spec(data)
    check_features(run, spec)
    if workers < 1:
        raise ConfigError("--workers must be at least 1")
    location = OutputLocation.of(out)
    if location.fs.exists(out) and location.fs.ls(out) and not overwrite:
        raise ConfigError(f"{out}: not empty; pass --overwrite to replace its predictions, or choose another --out")
    location.check_writable()
    source = open_source(spec)
    init_ray(address)
    if gpu and not ray.cluster_resources().get("GPU"):
        raise ConfigError("--gpu: the Ray cluster has no GPU")
    cuts = time_cuts(source) if spec.split_files is None and split != "all" else None
    t0 = time.perf_counter()
    ds = read_split(source, split, cuts, vocab=run.vocab)
    cpus = max(0.1, min(1.0, (ray.cluster_resources().get("CPU", 1) - 1) / workers))  # a CPU stays with the readers
    # whole blocks (bounded by Ray Data's block size) to each actor call, scored in batches
    # inside it: per-call overhead and output files stay per block, not per batch. A block goes
    # to a free actor (one in flight each), and Ray Data's per-operator CPU reservation is off:
    # with it, on a small cluster the pool's share of the CPUs let one actor score at a time
    # while the others idled (measured: 7 of 8 blocks on one of two actors, docs/serving.md)
    ds.context.op_resource_reservation_enabled = False
    scored = ds.map_batches(Scorer, fn_constructor_args=(str(run.dir), "cuda" if gpu else "cpu", batch_size), batch_size=None,
                            batch_format="pyarrow",
                            compute=ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=1),
                            num_cpus=0 if gpu else cpus, num_gpus=1 if gpu else 0)
    if overwrite and location.fs.exists(out):
        location.fs.rm(out, recursive=True)
    scored.write_parquet(out, filesystem=location.arrow_fs())
    wall = time.perf_counter() - t0
    rows, metrics = read_back(location, out)
    if split == "all":
        expected = sum(source.rows) if all(n >= 0 for n in source.rows) else None
    else:
        expected = dict(zip(("train", "dev", "test"), cuts.rows)).get(split) if cuts is not None and cuts.rows else None
    if expected is not None and expected != rows:
        raise RuntimeError(f"{out}: {rows:,} predictions for {expected:,} rows of the {split} split")
    result = {"rows": rows, "wall_s": wall, "rows_per_s": rows / max(wall, 1e-9), "out": out, **metrics}
    log(f"predicted {result['rows']:,} rows of the {split} split in {wall:.1f} s ({result['rows_per_s']:,.0f} rows/s, "
        f"{workers} scoring actors) -> {out}" + (f"; AUC {result['auc']:.4f} GAUC {result['gauc']:.4f}" if "auc" in result else ""))
    return result


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


__all__ = ["Scorer", "check_features", "predict", "read_back"]
