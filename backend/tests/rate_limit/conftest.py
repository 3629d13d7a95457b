"""Fixtures for the rate limiter tests: private Redis Cluster and Sentinel deployments."""

from collections.abc import Iterator

import pytest

from tests.support.redis_topologies import RedisClusterNodes, RedisSentinelSetup


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisClusterNodes]:
    """A private 3-master Redis Cluster."""
    cluster = RedisClusterNodes(masters=3)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture(scope="module")
def redis_sentinel() -> Iterator[RedisSentinelSetup]:
    """A private master watched by one Sentinel."""
    setup = RedisSentinelSetup()
    try:
        setup.start()
        yield setup
    finally:
        setup.cleanup()
