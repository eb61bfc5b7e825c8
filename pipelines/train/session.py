"""Who runs a worker's loop (:func:`pipelines.train.worker.train_loop`): the four things the loop
asks of it — its rank among the workers, the run's storage, the checkpoint to go on from, and
where reports go.

* :class:`RayTrainSession` — a worker of Ray Train's worker group (``TorchTrainer``): Ray Train
  persists each reported checkpoint into the run's storage, keeps the newest, restarts a failed
  group from the latest, and its controller forwards reports (to Tune in a sweep).
* :class:`InProcessSession` — the single worker of a run that trains in the process that runs
  it (``resources.trainer: in_process``; ``auto`` picks it for one worker without worker-failure
  recovery: docs/scale.md, "Fixed costs"): no controller or worker actor to start. It keeps Ray
  Train's storage contract itself: each checkpoint copied into the run's directory as
  ``checkpoint_<timestamp>`` with ``meta.json`` last (a copy cut short is unreadable, and the
  resume falls back to the checkpoint before it), the newest ``keep`` kept, the newest resumed;
  reports go to ``on_report`` (a sweep's trial: Tune).
"""

from __future__ import annotations

import datetime
import os
import posixpath
import shutil
from typing import Callable


class RayTrainSession:
    """The Ray Train worker this process is (inside ``TorchTrainer``'s loop)."""

    def __init__(self):
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        self.rank, self.world, self.local_world = ctx.get_world_rank(), ctx.get_world_size(), ctx.get_local_world_size()
        self.device = ray.train.torch.get_device()
        self._ctx = ctx

    def storage(self) -> tuple[object, str]:
        """(pyarrow filesystem, path) of the run's directory, Ray Train's own (its credentials)."""
        storage = self._ctx.get_storage()  # a DeveloperAPI of Ray Train
        return storage.storage_filesystem, storage.experiment_fs_path

    def get_checkpoint(self):
        import ray.train

        return ray.train.get_checkpoint()

    def report(self, metrics: dict, checkpoint) -> None:
        """``ray.train.report`` (``checkpoint``: a staging directory's
        :class:`pipelines.train.checkpoints.StoredCheckpoint`); the staging directory (a whole
        model and optimiser state, gigabytes for real models) is removed once Ray has persisted it."""
        import inspect

        import ray.train

        kw = {}
        if checkpoint is not None:
            checkpoint = ray.train.Checkpoint.from_directory(checkpoint.path)
            if "delete_local_checkpoint_after_upload" in inspect.signature(ray.train.report).parameters:
                kw["delete_local_checkpoint_after_upload"] = True
        ray.train.report(metrics, checkpoint=checkpoint, **kw)

    def placement_group(self) -> str:
        """This run's placement group, reported so that a sweep can free it if Tune stops the run."""
        import ray

        pg = ray.util.get_current_placement_group()
        return pg.id.hex() if pg is not None else ""

    def node_id(self) -> str | None:
        import ray

        return ray.get_runtime_context().get_node_id()


CHECKPOINT_PREFIX = "checkpoint_"
LAST_FILE = "meta.json"  # copied last: a checkpoint without it is one whose copy was cut short


def checkpoint_name(now: datetime.datetime | None = None) -> str:
    """``checkpoint_<timestamp>``, Ray Train's naming: sorted by name is sorted by time."""
    return CHECKPOINT_PREFIX + (now or datetime.datetime.now()).strftime("%Y-%m-%d_%H-%M-%S.%f")


class InProcessSession:
    """The one worker of a run trained in this process (see the module docstring).

    ``fs``/``run_dir``: the run's directory on a pyarrow filesystem (as Ray Train's storage);
    ``keep``: checkpoints kept (``faults.keep_checkpoints``); ``device``: where the model lives;
    ``on_report``: each report's metrics (None: nowhere)."""

    rank, world, local_world = 0, 1, 1

    def __init__(self, fs, run_dir: str, keep: int, device, on_report: Callable[[dict], None] | None = None):
        self.fs, self.run_dir, self.keep, self.device, self.on_report = fs, run_dir, keep, device, on_report
        self.latest = None  # the newest checkpoint this session persisted (a StoredCheckpoint)
        self.reports = 0

    def storage(self) -> tuple[object, str]:
        return self.fs, self.run_dir

    def get_checkpoint(self):
        """The run's newest complete checkpoint directory (a copy cut short is skipped; a complete
        one that cannot be read is the reader's to handle: :func:`pipelines.train.checkpoints.read_resumable`
        falls back to an older one)."""
        from pipelines.train.checkpoints import newest_checkpoint

        return newest_checkpoint(self.fs, self.run_dir)

    def report(self, metrics: dict, checkpoint) -> None:
        if checkpoint is not None:
            self.latest = self.persist(checkpoint.path)
        self.reports += 1
        if self.on_report is not None:
            self.on_report(dict(metrics))

    def persist(self, local_dir: str):
        """Copy a checkpoint's staging directory into the run's directory (``meta.json`` last),
        remove the staging directory, keep the newest ``keep``; the persisted checkpoint."""
        from pyarrow.fs import LocalFileSystem, copy_files

        from pipelines.train.checkpoints import SNAPSHOT, StoredCheckpoint, checkpoint_dirs

        dest = posixpath.join(self.run_dir, checkpoint_name())
        self.fs.create_dir(dest, recursive=True)
        local = LocalFileSystem()
        names = sorted(os.listdir(local_dir), key=lambda n: n == LAST_FILE)
        for name in names:
            copy_files(os.path.join(local_dir, name), posixpath.join(dest, name), source_filesystem=local,
                       destination_filesystem=self.fs)
        shutil.rmtree(local_dir, ignore_errors=True)
        # Ray Train's list of the run's checkpoints (a Ray Train attempt of the same run) no longer
        # names the newest: without it a later Ray Train attempt goes on from the newest directory
        snapshot = posixpath.join(self.run_dir, SNAPSHOT)
        if self.fs.get_file_info(snapshot).type.name != "NotFound":
            self.fs.delete_file(snapshot)
        for old in checkpoint_dirs(self.fs, self.run_dir)[self.keep:]:
            self.fs.delete_dir(old)
        return StoredCheckpoint(dest, self.fs)

    def placement_group(self) -> str:
        return ""  # no placement group of its own: the process's (a sweep's trial) is Tune's to free

    def node_id(self) -> str | None:
        return None


__all__ = ["CHECKPOINT_PREFIX", "InProcessSession", "RayTrainSession", "checkpoint_name"]
