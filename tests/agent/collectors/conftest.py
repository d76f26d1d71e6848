"""Fixtures of the collector tests."""

from __future__ import annotations

import pytest

from tests.agent.collectors.helpers import fixed_clock


@pytest.fixture
def clock():
    return fixed_clock
