"""Placement groups left behind by dead jobs, found and removed.

Ray removes a (non-detached) placement group once its creator job and, when an actor created
it, that actor are both dead. A group whose creation request reaches Ray's control store just as
its job dies escapes that: the store registers it after it has processed the deaths, keeps it
``CREATED`` and holds its CPUs forever. Measured here: a sweep driver killed while its next trial's
Ray Train controller was creating the workers' group (the controller and the driver both dead,
the group still holding 0.99 CPU, the store's own "creator dead" flags false); the rerun of the
sweep then waited for those CPUs until Ray Data's no-progress timeout, an hour later.

This module re-applies Ray's own rule against the job and actor tables as they are now; it
touches nothing else: detached groups, groups of live jobs, and groups whose creator is a live
detached actor (e.g. Ray Serve's) are kept.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass

LOG = logging.getLogger(__name__)

NIL_ACTOR = "ff" * 16


@dataclass(frozen=True)
class GroupRecord:
    """What decides a placement group's fate: its state, creator and lifetime."""

    group_id: str  # hex
    state: str  # PENDING, PREPARED, CREATED, RESCHEDULING, REMOVED
    creator_job: str  # hex
    creator_actor: str  # hex; NIL_ACTOR when a driver created it
    detached: bool
    cpus: float


@dataclass(frozen=True)
class ActorRecord:
    state: str  # ALIVE, DEAD, ...
    job: str
    detached: bool


def orphaned(groups: list[GroupRecord], dead_jobs: set[str], actors: dict[str, ActorRecord]) -> list[GroupRecord]:
    """The groups Ray should already have removed: not detached, not removed, their creator job
    dead, and their creator actor (if an actor created them) dead or itself doomed (a
    non-detached actor of a dead job is being torn down with it). An actor missing from the
    table counts as dead; a live detached creator keeps its groups (its lifetime is theirs)."""
    out = []
    for g in groups:
        if g.detached or g.state == "REMOVED" or g.creator_job not in dead_jobs:
            continue
        if g.creator_actor != NIL_ACTOR:
            a = actors.get(g.creator_actor)
            if a is not None and a.state != "DEAD" and (a.detached or a.job not in dead_jobs):
                continue
        out.append(g)
    return out


def _cluster_records() -> tuple[list[GroupRecord], set[str], dict[str, ActorRecord]]:
    """The control store's placement-group, job and actor tables (Ray's own ``ray._private.state``
    accessors, as ``ray.util.placement_group_table`` uses; the public State API's group listing
    omits the creator actor)."""
    from ray._private.state import state
    from ray.core.generated import gcs_pb2

    state_name = gcs_pb2.PlacementGroupTableData.PlacementGroupState.Name
    groups = []
    for raw in state._connect_and_get_accessor().get_placement_group_table():
        d = gcs_pb2.PlacementGroupTableData.FromString(raw)
        cpus = sum(b.unit_resources.get("CPU", 0.0) for b in d.bundles)
        groups.append(GroupRecord(d.placement_group_id.hex(), state_name(d.state), d.creator_job_id.hex(),
                                  d.creator_actor_id.hex() or NIL_ACTOR, d.is_detached, cpus))
    dead_jobs = {j["JobID"] for j in state.job_table() if j["IsDead"]}
    actors = {}
    for g in groups:
        if g.creator_actor != NIL_ACTOR and g.creator_job in dead_jobs and g.creator_actor not in actors:
            info = state.actor_table(g.creator_actor)
            if info:
                actors[g.creator_actor] = ActorRecord(info["State"], info["JobID"], info["IsDetached"])
    return groups, dead_jobs, actors


def remove_group(hex_id: str) -> bool:
    """Remove the placement group ``hex_id`` if it is still there; whether this call removed it."""
    import ray
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group

    pg = PlacementGroup(PlacementGroupID.from_hex(hex_id))
    try:
        if placement_group_table(pg).get("state") in (None, "REMOVED"):
            return False
        remove_placement_group(pg)
    except ray.exceptions.RayError:
        return False  # removed meanwhile
    return True


def free_leaked_placement_groups(log=None) -> list[GroupRecord]:
    """Remove the placement groups of dead jobs that Ray left behind; returns them (each named
    in one line through ``log``). A Ray whose internal tables cannot be read (another version)
    is left alone with a warning."""
    try:
        leaked = orphaned(*_cluster_records())
    except (AttributeError, ImportError, KeyError, TypeError) as e:  # Ray's internals moved
        LOG.warning("could not look for placement groups left by dead jobs (%s: %s)", type(e).__name__, e)
        return []
    freed = []
    for g in leaked:
        if not remove_group(g.group_id):
            continue
        freed.append(g)
        (log or LOG.warning)(f"freed placement group {g.group_id} ({g.cpus:g} CPU) left behind by dead job {g.creator_job}")
    return freed


@contextlib.contextmanager
def freeing_leaked_groups(log=None, interval_s: float = 10.0):
    """Around a fit: look for leaked groups now and every ``interval_s`` until it ends (a group
    can leak after the start: the dying job's request may reach the control store late)."""
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            try:
                free_leaked_placement_groups(log)
            except Exception as e:  # noqa: BLE001 - a watcher must not end the fit it watches
                LOG.warning("stopped looking for placement groups left by dead jobs (%s: %s)", type(e).__name__, e)
                return
            stop.wait(interval_s)

    thread = threading.Thread(target=watch, name="adasparse-leaked-groups", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=interval_s)
