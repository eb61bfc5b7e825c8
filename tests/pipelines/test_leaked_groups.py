"""Placement groups of dead jobs that Ray left holding CPUs: the rule, and the live tables."""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from pipelines.runtime.leaked_groups import NIL_ACTOR, ActorRecord, GroupRecord, _cluster_records, free_leaked_placement_groups, orphaned

ROOT = Path(__file__).resolve().parents[2]
DEAD, LIVE = "02000000", "01000000"


def _group(gid, job=DEAD, actor=NIL_ACTOR, state="CREATED", detached=False):
    return GroupRecord(gid, state, job, actor, detached, 1.0)


def test_only_groups_ray_should_have_removed_are_orphans():
    groups = [
        _group("driver-of-dead-job"),
        _group("pending-of-dead-job", state="PENDING"),
        _group("already-removed", state="REMOVED"),
        _group("live-job", job=LIVE),
        _group("detached", detached=True),
        _group("dead-creator", actor="a-dead"),
        _group("creator-missing", actor="a-gone"),
        _group("doomed-creator", actor="a-doomed"),  # non-detached actor of the dead job, not yet torn down
        _group("live-detached-creator", actor="a-serve"),  # e.g. Ray Serve's controller: its groups live with it
        _group("creator-in-live-job", actor="a-other"),
    ]
    actors = {
        "a-dead": ActorRecord("DEAD", DEAD, False),
        "a-doomed": ActorRecord("ALIVE", DEAD, False),
        "a-serve": ActorRecord("ALIVE", DEAD, True),
        "a-other": ActorRecord("ALIVE", LIVE, False),
    }
    found = [g.group_id for g in orphaned(groups, {DEAD}, actors)]
    assert found == ["driver-of-dead-job", "pending-of-dead-job", "dead-creator", "creator-missing", "doomed-creator"]


def test_live_tables_are_read_and_what_ray_keeps_is_left_alone(ray_local):
    """Another driver leaves a detached group and a detached actor owning a group, then exits;
    this job holds a group of its own. The tables are read as they are, and nothing is freed."""
    import ray
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group

    address = ray_local.get_runtime_context().gcs_address
    other = textwrap.dedent("""
        import ray
        from ray.util.placement_group import placement_group
        ray.init(address=ADDRESS, namespace="leaked-groups-test", logging_level="ERROR")
        detached = placement_group([{"CPU": 0.01}], lifetime="detached")
        ray.get(detached.ready())
        print(detached.id.hex())

        @ray.remote(num_cpus=0)
        class Holder:
            def make(self):
                self.pg = placement_group([{"CPU": 0.01}])
                ray.get(self.pg.ready())
                return self.pg.id.hex()

        h = Holder.options(lifetime="detached", name="leaked-groups-holder").remote()
        print(ray.get(h.make.remote()))
        print(ray.get_runtime_context().get_job_id())
    """).replace("ADDRESS", repr(address))
    env = {**os.environ, "RAY_ADDRESS": address}
    out = subprocess.run([sys.executable, "-c", other], env=env, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    detached_id, held_by_actor, other_job = out.stdout.split()[-3:]
    own = placement_group([{"CPU": 0.01}])
    ray.get(own.ready())
    holder = ray.get_actor("leaked-groups-holder", namespace="leaked-groups-test")
    detached = PlacementGroup(PlacementGroupID.from_hex(detached_id))
    try:
        deadline = time.time() + 30  # the other driver's exit reaches the job table
        while time.time() < deadline:
            groups, dead_jobs, actors = _cluster_records()
            if other_job in dead_jobs:
                break
            time.sleep(0.2)
        by_id = {g.group_id: g for g in groups}
        assert other_job in dead_jobs and ray.get_runtime_context().get_job_id() not in dead_jobs
        assert by_id[own.id.hex()].creator_actor == NIL_ACTOR and by_id[own.id.hex()].cpus == 0.01
        assert by_id[held_by_actor].creator_job == other_job and by_id[held_by_actor].state == "CREATED"
        assert actors[by_id[held_by_actor].creator_actor] == ActorRecord("ALIVE", other_job, True)
        assert by_id[detached.id.hex()].detached
        assert free_leaked_placement_groups() == []
        kept = (own, detached, PlacementGroup(PlacementGroupID.from_hex(held_by_actor)))
        assert [ray.util.placement_group_table(p)["state"] for p in kept] == ["CREATED"] * 3
    finally:
        ray.kill(holder)
        remove_placement_group(detached)
        remove_placement_group(own)
