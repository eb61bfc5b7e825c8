"""A run knows what it is (``OUT/NAME/run.json``): a rerun with other data or settings is refused
before Ray starts and touches nothing; the same command twice trains the same run; an
unreadable newest checkpoint falls back to the one before it, an unreadable list of checkpoints
(Ray's snapshot) is set aside; with no checkpoint readable the rerun stops in one line."""

from __future__ import annotations

import json
import shutil

import pytest

from pipelines.cli import main
from pipelines.train.run_identity import difference, flatten


def _files(run_dir):
    """The run's files and their modification times (Ray's own storage probe, a dotfile it
    rewrites whenever it starts, aside)."""
    return {p.relative_to(run_dir): p.stat().st_mtime_ns for p in run_dir.rglob("*")
            if p.is_file() and p.name != ".validate_storage_marker"}


@pytest.fixture(scope="module")
def finished(generated, tmp_path_factory):
    out = tmp_path_factory.mktemp("identity")
    args = ["train", "--data", str(generated / "spec.yaml"), "--workers", "2", "--epochs", "2", "--batch-size", "512",
            "--hidden-units", "16,8", "--out", str(out), "--name", "r"]
    assert main(args) == 0
    return out / "r", args


def test_a_rerun_that_is_another_run_is_refused_and_touches_nothing(finished, generated, tmp_path, capsys):
    run_dir, args = finished
    before = _files(run_dir)
    recorded = json.loads((run_dir / "run.json").read_text())
    assert recorded["options"]["optim.lr"] == 0.001 and recorded["epochs"] == 2 and len(recorded["files"]) == 4
    capsys.readouterr()
    moved = tmp_path / "copy"
    shutil.copytree(generated, moved)
    cases = [
        (["--lr", "0.01"], "is another run: optim.lr was 0.001, now 0.01"),
        (["--data", str(moved / "spec.yaml")], "is another run: the data spec's location was"),
        (["--epochs", "3"], "finished after 2 epochs"),
        (["--model.pruner.beta", "3"], "is another run: model.pruner.beta was 2.0, now 3.0"),
    ]
    for extra, message in cases:
        assert main(args + extra) == 2, extra
        err = capsys.readouterr().err.strip()
        assert message in err and "--name" in err and len(err.splitlines()) == 1, err
    assert _files(run_dir) == before


def test_the_same_command_and_seed_give_the_same_run(finished):
    """The train split's file order comes from the seed and the epoch (not a fresh random one),
    so a second run of the same command (another name) trains on the same batches: equal figures."""
    run_dir, args = finished
    name = args.index("--name")
    assert main(args[:name] + ["--name", "r-again"] + args[name + 2 :]) == 0
    one = json.loads((run_dir / "metrics.json").read_text())
    two = json.loads((run_dir.parent / "r-again" / "metrics.json").read_text())
    for split in ("dev", "test"):
        assert {k: one[split][k] for k in ("logloss", "auc", "gauc")} == {k: two[split][k] for k in ("logloss", "auc", "gauc")}
    assert [h["train_loss"] for h in one["history"]] == [h["train_loss"] for h in two["history"]]


def test_the_record_names_what_changed_in_the_data_files():
    base = {"options": {"optim.lr": 0.001}, "data_spec": {"location": "/d"}, "files": [["/d/a", 10, 100], ["/d/b", 5, 50]]}
    assert difference(base, base) is None
    grown = {**base, "files": [["/d/a", 10, 100], ["/d/b", 6, 60]]}
    assert difference(base, grown) == "data file /d/b changed (5 rows, 50 bytes then; 6 rows, 60 bytes now)"
    assert difference(base, {**base, "files": base["files"][:1]}) == "data file /d/b is gone"
    newer = {**base, "options": {"optim.lr": 0.001, "model.new_option": 1}}  # options a newer version added: not compared
    assert difference(base, newer) is None
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}


def test_an_unreadable_newest_checkpoint_falls_back_to_the_one_before(finished, capsys):
    run_dir, args = finished
    metrics = json.loads((run_dir / "metrics.json").read_text())
    ckpts = sorted(p for p in run_dir.iterdir() if p.name.startswith("checkpoint_") and p.is_dir())
    assert len(ckpts) == 2
    state = ckpts[-1] / "state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 3])  # truncated, as by a crash mid-write
    capsys.readouterr()
    assert main(args) == 0
    again = json.loads((run_dir / "metrics.json").read_text())
    assert again["test"]["auc"] == pytest.approx(metrics["test"]["auc"], abs=1e-6)  # the same best weights, tested again
    # Ray's list of the run's checkpoints cut short: set aside, the newest checkpoint directory resumes
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    snapshot.write_text(snapshot.read_text()[:50])
    capsys.readouterr()
    assert main(args) == 0
    assert "is unreadable" in capsys.readouterr().out and list(run_dir.glob("checkpoint_manager_snapshot.json.unreadable-*"))
    json.loads(snapshot.read_text())  # Ray wrote a new one
    again = json.loads((run_dir / "metrics.json").read_text())
    assert again["test"]["auc"] == pytest.approx(metrics["test"]["auc"], abs=1e-6)
    # no checkpoint readable: one line, nothing rewritten
    for p in sorted(q for q in run_dir.iterdir() if q.name.startswith("checkpoint_") and q.is_dir()):
        (p / "state.pt").write_bytes(b"\0" * 64)
    before = _files(run_dir)
    capsys.readouterr()
    assert main(args) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # (Ray forwards the worker's log before it)
    assert last.startswith("adasparse train: ") and "state.pt" not in last
    assert "not a tensor file: truncated or overwritten) and the run has no older readable checkpoint" in last, last
    assert _files(run_dir) == before
