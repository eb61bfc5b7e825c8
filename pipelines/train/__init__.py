"""The distributed training job: ``python -m pipelines.train`` (:mod:`.driver`), the worker
(:mod:`.worker`, the library's loop with Ray's shards, exchange and reports), its typed
configuration (:mod:`.job_config`, :mod:`.job_flags`, :mod:`.worker_config`), checkpoints."""
