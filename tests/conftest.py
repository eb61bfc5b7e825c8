"""Fixtures and tiers for every test. The tests mirror the layout: ``tests/library/`` tests the
model library without Ray; ``tests/pipelines/`` tests the Ray side (its fixtures: one local Ray
per test session, a generated dataset); ``test_readme.py`` the README itself.

Tiers, by what a test starts (markers; ``make test`` runs the fast tier, ``make test-all`` all):

* ``ray`` — the test needs a Ray cluster: every test that uses the session's local Ray (the
  ``ray_local`` fixture, directly or through another fixture) is marked here, at collection;
  a test that starts a Ray of its own (a head node, a fake multi-node cluster, a job in a
  subprocess) carries the mark itself;
* ``fast`` — a Ray test that also runs in the fast tier: a few representative ones (the
  training job end to end, a sweep, predict), so the fast tier still starts Ray once;
* ``processes`` — a test that starts process groups of its own without Ray (e.g. gloo workers
  measured by a benchmark): tens of seconds, left to the full suite;
* ``slow`` — end-to-end runs of minutes (faults, sweeps, clusters); informational.

The fast tier is ``-m "not (ray or processes) or fast"``: every test that needs no Ray cluster
and starts no process group, plus the ``fast`` ones; ``make test-rest`` runs the others.
"""

from __future__ import annotations

import pytest

from adasparse.config import FeatureConfig
from model_helpers import make_features


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "ray_local" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ray)


@pytest.fixture
def features() -> FeatureConfig:
    return make_features()
