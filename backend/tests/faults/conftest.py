"""Fixtures of the fault drills: the seeded population and the drills' private services."""

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.rig import Population, seed, start_web
from tests.support.gunicorn_server import GunicornServer


@pytest.fixture
def population(tmp_path: Path, database_url: str) -> Population:
    """An admin, six candidates with an open attempt each, and five jobs."""
    return asyncio.run(seed(tmp_path, database_url))


@pytest.fixture
def web(database_url: str, redis_url: str) -> Iterator[GunicornServer]:
    """The web tier with the drills' settings and its own Redis."""
    server = start_web(database_url, REDIS_URL=redis_url)
    yield server
    server.stop()
