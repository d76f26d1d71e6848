"""Fixtures of the agent tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.agent.helpers import ScriptedServer


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    srv = ScriptedServer()
    yield srv
    srv.close()
