"""How commands end: a user error — raised directly or wrapped the way Ray wraps it — is one
line and status 2; anything else propagates."""

from __future__ import annotations

import pytest

from adasparse.config import ConfigError
from adasparse.errors import UserError, find_user_error
from pipelines.runtime.exit_status import run_command
from pipelines.data.sources import DataError


class WorkerGroupError(RuntimeError):
    """Shaped like Ray Train's: the workers' exceptions by rank."""

    def __init__(self, failures):
        super().__init__("Training failed due to worker errors")
        self.worker_failures = failures


class TaskError(RuntimeError):
    """Shaped like ray.exceptions.RayTaskError: the remote exception as ``cause``."""

    def __init__(self, cause):
        super().__init__("ray::task() (pid=1)\n  Traceback ...\n" + str(cause))
        self.cause = cause


def test_user_errors_are_found_through_ray_style_wrappers():
    data = DataError("f.parquet: column 'label': label not 0 or 1 (2)")
    assert find_user_error(data) is data
    assert find_user_error(WorkerGroupError({0: RuntimeError("x"), 1: TaskError(data)})) is data
    try:
        try:
            raise data
        except DataError as inner:
            raise RuntimeError("stream failed") from inner
    except RuntimeError as chained:
        assert find_user_error(chained) is data
    assert find_user_error(RuntimeError("DataError: looks like one")) is None  # no matching of text
    assert isinstance(ConfigError("x"), UserError) and isinstance(data, UserError)


def test_run_command_prints_one_line_and_returns_2(capsys):
    def body():
        raise WorkerGroupError({0: TaskError(DataError("f.parquet: column 'x': infinite value"))})

    assert run_command("adasparse train", body) == 2
    assert capsys.readouterr().err == "adasparse train: f.parquet: column 'x': infinite value\n"
    assert run_command("adasparse train", lambda: None) == 0


def test_run_command_lets_bugs_through():
    def body():
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        run_command("adasparse", body)
    with pytest.raises(TypeError, match="returned dict, not an exit status"):
        run_command("adasparse", lambda: {"best_epoch": 1})


@pytest.mark.parametrize("status, hooks_run", [(130, False), (2, True), (0, True)])
def test_an_interrupted_command_ends_without_the_interpreters_exit_hooks(status, hooks_run):
    """After Ctrl-C the process ends at once (Ray's exit hook, ray.shutdown, once crashed it
    while the fit's thread was still inside Ray); every other status ends normally."""
    import subprocess
    import sys

    code = ("import atexit; from pipelines.runtime.exit_status import exit_process; "
            "atexit.register(lambda: print('exit hook ran', flush=True)); print('line', flush=True); "
            f"exit_process({status})")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == status
    assert r.stdout.splitlines() == (["line", "exit hook ran"] if hooks_run else ["line"])
