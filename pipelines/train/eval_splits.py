"""How Ray Train shares the evaluation splits among the workers: every row of dev and test to
exactly one worker (``streaming_split(equal=False)``: rows handed out as workers ask), so the
merged metrics are over every row, for any number of workers. Ray Train's default splits every
dataset equally, which drops up to workers − 1 rows of each. (The train split is no Ray dataset:
each worker reads its own stream, :mod:`pipelines.data.train_stream`.)"""

from __future__ import annotations

from ray.train import DataConfig

EVAL_SPLITS = ("dev", "test")


class ExactEvaluationSplits(DataConfig):
    def __init__(self, eval_splits: tuple[str, ...] = EVAL_SPLITS):
        super().__init__(datasets_to_split="all")
        self._eval_splits = tuple(eval_splits)

    def configure(self, datasets, world_size, worker_handles, worker_node_ids, **kwargs):
        evaluated = [n for n in self._eval_splits if n in datasets]
        others = {n: ds for n, ds in datasets.items() if n not in evaluated}
        output = super().configure(others, world_size, worker_handles, worker_node_ids, **kwargs)
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


__all__ = ["EVAL_SPLITS", "ExactEvaluationSplits"]
