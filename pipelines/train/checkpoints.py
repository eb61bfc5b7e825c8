"""A training run's checkpoint directory, as Ray Train persists it.

    state.pt           tensors only (``torch.load(weights_only=True)``): model, best_model, optim
    meta.json          last finished epoch, the best epoch's record, the history, final or not,
                       the domain vocabulary's fingerprint
    model_config.json  the whole model config (features included): enough to rebuild the model
    vocabulary.json    the domain-aware fields' vocabulary the ids of this model come from
    final.json         the last report's figures (test metrics, per-domain rows), final only
    test_metrics.npz   the merged test statistics (per domain and score), final only: exact
                       metrics of any set of domains afterwards (``adasparse analyze``)
    test_masks.npz     AdaSparse, final only: per largest train domain, its test rows and the
                       sum of their kept-neuron indicators (the mean masks of Fig. 3(a))

Written by rank 0 into a fresh temporary directory that Ray Train (or, for a run trained in
process, :class:`pipelines.train.session.InProcessSession`) copies to the run's storage.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile


class StoredCheckpoint:
    """A checkpoint directory — ``path`` on a pyarrow ``filesystem`` (None: this machine's) — read
    the way :class:`ray.train.Checkpoint` is (``path``, ``filesystem``, ``as_directory``), without
    importing Ray Train: the checkpoints a run trained in process writes and resumes."""

    def __init__(self, path: str, filesystem=None):
        self.path, self.filesystem = path, filesystem

    @classmethod
    def from_directory(cls, path: str) -> "StoredCheckpoint":
        return cls(path)

    @contextlib.contextmanager
    def as_directory(self):
        """A local directory with the checkpoint's files (a copy when it is not on this machine)."""
        from pyarrow.fs import LocalFileSystem, copy_files

        if self.filesystem is None or isinstance(self.filesystem, LocalFileSystem):
            yield self.path
            return
        tmp = tempfile.mkdtemp(prefix="adasparse-ckpt-read-")
        try:
            copy_files(self.path, tmp, source_filesystem=self.filesystem, destination_filesystem=LocalFileSystem())
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def __repr__(self) -> str:
        return f"StoredCheckpoint({self.path!r})"


def write_checkpoint(runner, final: dict | None, vocabulary: str | None = None, fingerprint: str | None = None,
                     test_statistics: dict | None = None, test_masks: dict | None = None, tensors: dict | None = None):
    """A :class:`StoredCheckpoint` of ``runner`` (an :class:`adasparse.loop.LoopRunner`) in a
    fresh local directory, for the session to persist;
    ``final``: the run's closing figures (then without the optimiser: nothing trains after it);
    ``vocabulary``: the vocabulary's JSON, stored beside the weights, with its ``fingerprint``;
    ``tensors``: the runner's state when already gathered (sharded tables), else read here.
    The tables are whole, in the replicated layout, whatever the run's sharding: so says
    ``model_config.json`` (serving, ``export`` and ``analyze`` build a replicated model)."""
    import torch

    tmp = tempfile.mkdtemp(prefix="adasparse-ckpt-")
    torch.save(tensors if tensors is not None else runner.state_tensors(with_optimizer=final is None), os.path.join(tmp, "state.pt"))
    model_config = runner.model.cfg.model_dump(mode="json")
    model_config["embedding"]["sharding"] = "replicated"
    files = {"meta.json": {**runner.state_meta(), "final": final is not None, "vocabulary": fingerprint},
             "model_config.json": model_config}
    if final is not None:
        files["final.json"] = final
    for name, content in files.items():
        with open(os.path.join(tmp, name), "w") as fh:
            json.dump(content, fh, default=float)
    if vocabulary is not None:
        with open(os.path.join(tmp, "vocabulary.json"), "w") as fh:
            fh.write(vocabulary)
    for name, arrays in (("test_metrics.npz", test_statistics), ("test_masks.npz", test_masks)):
        if arrays is not None:
            import numpy as np

            np.savez(os.path.join(tmp, name), **arrays)
    return StoredCheckpoint.from_directory(tmp)


MASK_DOMAINS = 64  # largest train domains whose mean test masks a final checkpoint keeps


def mask_domains(vocab, top: int = MASK_DOMAINS):
    """The keys of the ``top`` largest train domains (most train rows first; None without counts)."""
    import numpy as np

    if vocab is None or vocab.train_key_rows is None:
        return None
    return vocab.train_keys[np.argsort(-vocab.train_key_rows, kind="stable")[:top]]


def mask_arrays(result, model) -> dict | None:
    """What ``test_masks.npz`` holds for an evaluation (:class:`adasparse.loop.EvalResult`)."""
    import numpy as np

    m = result.masks
    if m is None:
        return None
    return {"keys": m.keys, "rows": m.rows, "kept": m.kept, "widths": np.array(model.pruned_widths)}


def read_checkpoint(checkpoint, device) -> tuple[dict, dict] | None:
    """(tensors, meta) of a checkpoint written by :func:`write_checkpoint`; None without one."""
    if checkpoint is None:
        return None
    import torch

    with checkpoint.as_directory() as d:
        tensors = torch.load(os.path.join(d, "state.pt"), weights_only=True, map_location=device)  # no pickled objects
        with open(os.path.join(d, "meta.json")) as fh:
            meta = json.load(fh)
    return tensors, meta


SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train's list of a run's checkpoints


def checkpoint_dirs(fs, run_dir: str, before: str | None = None) -> list[str]:
    """A run's checkpoint directories (``checkpoint_<timestamp>``), newest first; ``before``:
    only those older than that one. ``fs``: a pyarrow filesystem."""
    from pyarrow.fs import FileSelector, FileType

    infos = fs.get_file_info(FileSelector(run_dir, allow_not_found=True))
    found = [i.path for i in infos if i.type == FileType.Directory and i.base_name.startswith("checkpoint_")]
    return sorted((p for p in found if before is None or p < before), reverse=True)  # by name is by time


def newest_checkpoint(fs, run_dir: str):
    """The newest complete checkpoint directory of a run (None: none), for a restart that Ray's
    own list of checkpoints cannot tell (its snapshot set aside or absent) and for a run trained
    in process. Complete: its ``meta.json`` is there (written, and copied, last); a directory
    without it is a copy cut short, never resumed (nor reported as unreadable: it was not done)."""
    from pyarrow.fs import FileType

    for d in checkpoint_dirs(fs, run_dir):
        if fs.get_file_info(f"{d}/meta.json").type == FileType.File:
            return StoredCheckpoint(d, fs)
    return None


def set_aside_unreadable_snapshot(out, name: str, log) -> bool:
    """Ray Train stops with a traceback when a run's checkpoint list (``SNAPSHOT``) is not
    valid JSON (a write cut short). Move such a file aside, saying so: the workers then resume
    from the run's newest readable checkpoint directory (:func:`newest_checkpoint`)."""
    import time

    path = out.join(name, SNAPSHOT)
    if not out.fs.exists(path):
        return False
    try:
        with out.fs.open(path, "r") as fh:
            json.load(fh)
        return False
    except (OSError, ValueError) as err:
        aside = f"{path}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}"
        out.fs.mv(path, aside)
        log(f"{name}: Ray's checkpoint list {out.url(path)} is unreadable ({str(err).splitlines()[0][:80]}): "
            f"set aside as {out.url(aside)}; resuming from the newest readable checkpoint directory")
        return True


def unlisted_checkpoints(out, name: str) -> bool:
    """The run has checkpoint directories but no list of Ray Train's (``SNAPSHOT``): written by a
    run trained in process (:class:`pipelines.train.session.InProcessSession`), or by a Ray Train
    attempt killed before it wrote its list. A Ray Train attempt then goes on from the newest
    readable directory, as after :func:`set_aside_unreadable_snapshot`."""
    run_dir = out.join(name)
    if out.fs.exists(out.join(name, SNAPSHOT)):
        return False
    try:
        entries = out.fs.ls(run_dir, detail=True)
    except FileNotFoundError:
        return False
    return any(e["type"] == "directory" and e["name"].rstrip("/").rsplit("/", 1)[-1].startswith("checkpoint_") for e in entries)


def unreadable_reason(err: BaseException) -> str:
    """A short reason why a checkpoint file could not be read."""
    text = str(err).strip()
    if "Weights only load failed" in text or "invalid load key" in text:
        return "not a tensor file: truncated or overwritten"
    return (text.splitlines() or [type(err).__name__])[0][:160]


def read_resumable(checkpoint, device, log=None) -> tuple[dict, dict] | None:
    """(tensors, meta) of the checkpoint Ray hands a (re)started worker (None: none). When it
    cannot be read — a truncated ``state.pt`` or ``meta.json`` — the newest readable older
    checkpoint of the run instead, saying so through ``log``; none readable: a one-line error
    (nothing is overwritten: the run stops before training)."""
    if checkpoint is None:
        return None
    try:
        return read_checkpoint(checkpoint, device)
    except Exception as err:  # noqa: BLE001  (any unreadable file: the fallback below decides)
        why = unreadable_reason(err)
    import posixpath

    from adasparse.config import ConfigError

    fs, newest = checkpoint.filesystem, checkpoint.path.rstrip("/")
    run_dir = posixpath.dirname(newest)
    for path in checkpoint_dirs(fs, run_dir, before=newest):
        try:
            found = read_checkpoint(StoredCheckpoint(path, fs), device)
        except Exception:  # noqa: BLE001
            continue
        if log is not None:
            log(f"checkpoint {newest} is unreadable ({why}); resuming from the older {path}")
        return found
    raise ConfigError(f"{newest}: unreadable ({why}) and the run has no older readable checkpoint; "
                      f"move {run_dir} away or pass another --name to start a new run")


def read_final(checkpoint) -> dict:
    """The closing figures of a finished run's last checkpoint."""
    with checkpoint.as_directory() as d:
        with open(os.path.join(d, "final.json")) as fh:
            return json.load(fh)


__all__ = ["SNAPSHOT", "StoredCheckpoint", "checkpoint_dirs", "mask_arrays", "mask_domains", "newest_checkpoint", "read_checkpoint", "read_final",
           "read_resumable", "set_aside_unreadable_snapshot", "unlisted_checkpoints", "write_checkpoint"]
