"""How the splits are shared among the Ray Train workers.

* **train** (only with ``ingest.train_reader: streaming_split``; by default each worker reads its
  own stream, :mod:`pipelines.data.train_stream`): equal shards (Ray Data's
  ``streaming_split(equal=True)``), so every worker takes the same number of steps. The train
  split is given once per epoch a worker group may start at (:func:`train_split_name`): a group
  that starts at epoch ``s`` (a restart, a rerun) reads ``train@s``, whose executions count from
  ``s`` (:func:`pipelines.data.reading.from_epoch`), so every epoch reads its files in the same order
  whether or not the run was interrupted;
* **dev and test**: every row to exactly one worker (``equal=False``: rows are handed out as
  workers ask), so the merged metrics are over every row, for any number of workers. Ray
  Train's default splits every dataset equally, which drops up to workers − 1 rows of each.
"""

from __future__ import annotations

from ray.train import DataConfig

EVAL_SPLITS = ("dev", "test")


def train_split_name(start_epoch: int) -> str:
    """The train split for a worker group that starts at ``start_epoch``."""
    return f"train@{start_epoch}"


class ExactEvaluationSplits(DataConfig):
    def __init__(self, eval_splits: tuple[str, ...] = EVAL_SPLITS):
        super().__init__(datasets_to_split="all")
        self._eval_splits = tuple(eval_splits)

    def configure(self, datasets, world_size, worker_handles, worker_node_ids, **kwargs):
        evaluated = [n for n in self._eval_splits if n in datasets]
        trained = {n: ds for n, ds in datasets.items() if n not in evaluated}
        output = super().configure(trained, world_size, worker_handles, worker_node_ids, **kwargs)
        hints = worker_node_ids if self._enable_shard_locality else None
        for name in evaluated:
            ds = datasets[name]
            if ds.name is None:
                ds.set_name(name)
            ds = ds.copy(ds)
            ds.context.execution_options = self._resolve_execution_options(name)
            for i, split in enumerate(ds.streaming_split(world_size, equal=False, locality_hints=hints)):
                output[i][name] = split
        return output


__all__ = ["EVAL_SPLITS", "ExactEvaluationSplits", "train_split_name"]
