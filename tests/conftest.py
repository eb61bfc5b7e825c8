"""Fixtures for every test. The tests mirror the layout: ``tests/library/`` tests the model
library without Ray; ``tests/pipelines/`` tests the Ray side (its fixtures: one local Ray per
test session, a generated dataset); ``test_readme.py`` the README itself."""

from __future__ import annotations

import pytest

from adasparse.config import FeatureConfig
from model_helpers import make_features


@pytest.fixture
def features() -> FeatureConfig:
    return make_features()
