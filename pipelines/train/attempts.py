"""Every start of a run's worker group, recorded in the run's storage, so that restarts are
counted and the training each one redid is measured.

Ray Train restarts a failed worker group from the newest checkpoint it registered, or from
scratch when it has none, and tells the training code neither. Rank 0 of each start writes
``RUN/attempts/<launch>-<n>.json`` (``launch``: this start of the command; ``n``: the worker
group's start within it), through the run's own storage filesystem (local or S3). From those
markers and the checkpoint resumed, :func:`record_attempt` gives the run's restarts:

Each says where training went on: ``from_epoch`` and ``from_step`` (the updates of that epoch a
mid-epoch checkpoint held; 0: its start).

* ``worker_failure``: a worker group started again within the same launch; ``lost_s`` is the
  time from the later of the previous start and the resumed checkpoint's writing to this start —
  the training redone, plus the failure's detection and the new group's start-up;
* ``rerun``: the command run again, resuming a checkpoint another launch wrote.
"""

from __future__ import annotations

import json
import time

ATTEMPTS_DIR = "attempts"


def _markers(fs, run_dir: str, launch: str) -> list[dict]:
    from pyarrow.fs import FileSelector, FileType

    infos = fs.get_file_info(FileSelector(f"{run_dir}/{ATTEMPTS_DIR}", allow_not_found=True))
    paths = sorted(i.path for i in infos if i.type == FileType.File and i.base_name.startswith(f"{launch}-"))
    out = []
    for p in paths:
        with fs.open_input_stream(p) as fh:
            out.append(json.loads(fh.read()))
    return out


def restarts_of(markers: list[dict], earlier: list[dict]) -> list[dict]:
    """The run's restarts: ``earlier`` (carried by the resumed checkpoint; those of other
    launches are kept) and this launch's, rebuilt from its ``markers`` (in start order)."""
    launch = markers[0]["launch"]
    out = [r for r in earlier if r.get("launch") != launch]
    first = markers[0]
    if first.get("checkpoint_launch") not in (None, launch) and not first.get("checkpoint_final"):
        out.append({"kind": "rerun", "launch": launch, "from_epoch": first["from_epoch"], "from_step": first.get("from_step", 0)})
    for before, m in zip(markers, markers[1:]):
        since = max(before["started_at"], m.get("checkpoint_written_at") or 0.0)
        out.append({"kind": "worker_failure", "launch": launch, "from_epoch": m["from_epoch"],
                    "from_step": m.get("from_step", 0), "lost_s": round(max(0.0, m["started_at"] - since), 3)})
    return out


def record_attempt(fs, run_dir: str, launch: str, from_epoch: int, resumed: dict | None) -> list[dict]:
    """Write this worker-group start's marker (rank 0 calls it once per start); returns the
    run's restarts so far (:func:`restarts_of`)."""
    markers = _markers(fs, run_dir, launch)
    progress = (resumed or {}).get("in_progress") or {}
    mine = {"launch": launch, "attempt": len(markers), "started_at": time.time(), "from_epoch": from_epoch,
            "from_step": int(progress.get("steps", 0)),  # > 0: a mid-epoch checkpoint, the epoch's updates it holds
            "checkpoint_written_at": (resumed or {}).get("written_at"), "checkpoint_launch": (resumed or {}).get("launch"),
            "checkpoint_final": bool((resumed or {}).get("final"))}
    fs.create_dir(f"{run_dir}/{ATTEMPTS_DIR}", recursive=True)
    with fs.open_output_stream(f"{run_dir}/{ATTEMPTS_DIR}/{launch}-{mine['attempt']:04d}.json") as fh:
        fh.write(json.dumps(mine).encode())
    return restarts_of(markers + [mine], (resumed or {}).get("restarts", []))


__all__ = ["ATTEMPTS_DIR", "record_attempt", "restarts_of"]
