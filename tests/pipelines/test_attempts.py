"""Restarts rebuilt from the worker-group start markers (pipelines/train/attempts.py)."""

from pyarrow.fs import LocalFileSystem

from pipelines.train.attempts import record_attempt, restarts_of


def _m(attempt, at, epoch, written=None, launch="L2", ck_launch=None, final=False, step=0):
    return {"launch": launch, "attempt": attempt, "started_at": at, "from_epoch": epoch, "checkpoint_written_at": written,
            "checkpoint_launch": ck_launch, "checkpoint_final": final, "from_step": step}


def test_failures_reruns_and_the_work_each_redid():
    earlier = [{"kind": "worker_failure", "launch": "L1", "from_epoch": 2, "lost_s": 5.0},
               {"kind": "worker_failure", "launch": "L2", "from_epoch": 1, "lost_s": 9.0}]  # stale: rebuilt from markers
    markers = [_m(0, 100.0, 3, written=90.0, ck_launch="L1"),  # the command rerun: resumes L1's epoch-2 checkpoint
               _m(1, 160.0, 3, written=90.0, ck_launch="L1"),  # a failure before any new checkpoint: 60 s since the start
               _m(2, 400.0, 5, written=380.0, ck_launch="L2", step=70)]  # 20 s after a checkpoint at step 70 of epoch 5
    assert restarts_of(markers, earlier) == [
        {"kind": "worker_failure", "launch": "L1", "from_epoch": 2, "lost_s": 5.0},
        {"kind": "rerun", "launch": "L2", "from_epoch": 3, "from_step": 0},
        {"kind": "worker_failure", "launch": "L2", "from_epoch": 3, "from_step": 0, "lost_s": 60.0},
        {"kind": "worker_failure", "launch": "L2", "from_epoch": 5, "from_step": 70, "lost_s": 20.0},
    ]
    # a first start from scratch, or re-testing a finished run, restarts nothing
    assert restarts_of([_m(0, 1.0, 1)], []) == []
    assert restarts_of([_m(0, 1.0, 4, written=0.5, ck_launch="L1", final=True)], []) == []


def test_markers_are_written_in_the_run_and_counted_per_launch(tmp_path):
    fs, run = LocalFileSystem(), str(tmp_path / "run")
    assert record_attempt(fs, run, "A", 1, None) == []
    ck = {"epoch": 1, "written_at": 0.0, "launch": "A", "restarts": []}
    got = record_attempt(fs, run, "A", 2, ck)
    assert [(r["kind"], r["from_epoch"]) for r in got] == [("worker_failure", 2)] and got[0]["lost_s"] >= 0
    ck2 = {"epoch": 2, "written_at": 0.0, "launch": "A", "restarts": got}
    again = record_attempt(fs, run, "B", 3, ck2)  # another launch: the command rerun
    assert [(r["kind"], r["launch"], r["from_epoch"]) for r in again] == [("worker_failure", "A", 2), ("rerun", "B", 3)]
    assert sorted(p.name for p in (tmp_path / "run" / "attempts").iterdir()) == ["A-0000.json", "A-0001.json", "B-0000.json"]
