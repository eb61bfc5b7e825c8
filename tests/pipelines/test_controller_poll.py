"""faults.controller_poll_s: the Train controller's poll interval reaches the controller through
Ray Train's own propagation of the fitting process's environment, only while a fit runs."""

from __future__ import annotations

import os

import pytest

from adasparse.config import ConfigError
from pipelines.train.driver import CONTROLLER_POLL_ENV, controller_poll
from pipelines.train.job_flags import parse_job_args


def test_the_interval_is_set_for_the_fit_and_restored(monkeypatch):
    monkeypatch.delenv(CONTROLLER_POLL_ENV, raising=False)
    with controller_poll(0.25):
        assert os.environ[CONTROLLER_POLL_ENV] == "0.25"
    assert CONTROLLER_POLL_ENV not in os.environ
    monkeypatch.setenv(CONTROLLER_POLL_ENV, "3")
    with controller_poll(1):
        assert os.environ[CONTROLLER_POLL_ENV] == "1.0"
    assert os.environ[CONTROLLER_POLL_ENV] == "3"


def test_ray_train_hands_it_to_the_controller(monkeypatch):
    """The variable is the one the controller reads and the trainer propagates (a Ray upgrade
    that renames it fails here, not silently in every run's fixed cost)."""
    from ray.train.v2._internal.constants import HEALTH_CHECK_INTERVAL_S_ENV_VAR, get_env_vars_to_propagate

    assert CONTROLLER_POLL_ENV == HEALTH_CHECK_INTERVAL_S_ENV_VAR
    monkeypatch.delenv(CONTROLLER_POLL_ENV, raising=False)
    assert CONTROLLER_POLL_ENV not in get_env_vars_to_propagate()
    with controller_poll(0.25):
        assert get_env_vars_to_propagate()[CONTROLLER_POLL_ENV] == "0.25"


def test_the_option_default_and_bounds():
    job = parse_job_args(["--data", "d.yaml"])
    assert job.faults.controller_poll_s == 0.25
    assert parse_job_args(["--data", "d.yaml", "--faults.controller_poll_s", "2"]).faults.controller_poll_s == 2.0
    for bad, message in (("0", "greater than 0"), ("61", "less than or equal to 60")):
        with pytest.raises(ConfigError, match=f"faults.controller_poll_s: Input should be {message}"):
            parse_job_args(["--data", "d.yaml", "--faults.controller_poll_s", bad])
