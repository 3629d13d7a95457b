"""Fixtures for adapter tests: the fake upstream process, one per test worker."""

from collections.abc import Iterator

import pytest

from tests.support.fake_upstream import FakeUpstream


@pytest.fixture(scope="session")
def upstream_server() -> Iterator[FakeUpstream]:
    server = FakeUpstream()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def upstream(upstream_server: FakeUpstream) -> FakeUpstream:
    """The fake upstream, healthy with counters at zero."""
    upstream_server.reset()
    return upstream_server
