"""The breaker shared by OS processes through a real Redis, against a real upstream process."""

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from tests.services.circuit_breaker.fleet import BREAKER, Fleet, total
from tests.support.fake_upstream import FakeUpstream
from tests.support.redis_server import RedisServer
from tests.support.wait import LOADED_MACHINE_MARGIN, wait_until_sync

pytestmark = pytest.mark.slow

# Only the consecutive-failure rule, so each test controls exactly what opens the breaker.
BASE: dict[str, Any] = {
    "failure_threshold": 5,
    "failure_rate_threshold": None,
    "sync_interval": 0.2,
}
STATE_KEY = f"cb:{{{BREAKER}}}:s"
# A published batch or a refresh: one Redis round trip, at most one sync interval away.
PUBLISHED = 1.0


def shared_state(redis_url: str) -> dict[str, str]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return {str(key): str(value) for key, value in client.hgetall(STATE_KEY).items()}
    finally:
        client.close()


def redis_now_ms(redis_url: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        seconds, micros = client.time()
        return int(seconds) * 1000 + int(micros) // 1000
    finally:
        client.close()


def wait_recovered(fleet: Fleet, redis_url: str, open_seconds: float) -> None:
    """The shared OPEN period (``open_seconds`` long) is over, and every process's local copy of
    it too."""
    wait_until_sync(
        lambda: redis_now_ms(redis_url) >= int(shared_state(redis_url).get("until", "0")),
        within=open_seconds,
        what="the shared open period to end",
    )
    wait_until_sync(
        lambda: fleet.all("retry_after") == [0] * len(fleet),
        within=PUBLISHED,
        what="every process to see the open period end",
    )


@pytest.fixture
def fleet_factory(redis_url: str, upstream: FakeUpstream) -> Iterator[Callable[..., Fleet]]:
    fleets: list[Fleet] = []

    def make(size: int = 4, **config: Any) -> Fleet:
        fleet = Fleet(size, redis_url, upstream.url, BASE | config)
        fleets.append(fleet)
        return fleet

    yield make
    for fleet in fleets:
        fleet.stop()


def open_breaker(fleet: Fleet, upstream: FakeUpstream, calls: int = 10) -> None:
    upstream.set_mode("503")
    fleet.all("burst", calls)
    wait_until_sync(
        lambda: fleet.all("view") == ["open"] * len(fleet),
        within=PUBLISHED,
        what="every process to see the breaker open",
    )


def test_failure_storm_opens_once_and_upstream_sees_nothing_while_open(
    fleet_factory: Callable[..., Fleet], upstream: FakeUpstream, redis_url: str
) -> None:
    fleet = fleet_factory(4, recovery_timeout=60.0)
    upstream.set_mode("503")

    storm = fleet.all("burst", 50)

    assert total(storm, "ok") == 0
    assert total(storm, "unavailable") + total(storm, "open") == 200
    # Every process learns OPEN from its own published batch, without any further call.
    wait_until_sync(
        lambda: fleet.all("view") == ["open"] * 4, within=PUBLISHED, what="OPEN everywhere"
    )
    state = shared_state(redis_url)
    assert state["st"] == "open"
    assert state["gen"] == "1"  # one transition fleet-wide, however many processes failed at once
    seen = upstream.calls()

    again = fleet.all("burst", 50)

    assert total(again, "open") == 200
    assert upstream.calls() == seen


def test_exactly_one_probe_after_recovery_and_success_closes_for_everyone(
    fleet_factory: Callable[..., Fleet], upstream: FakeUpstream, redis_url: str
) -> None:
    # Every process's burst must reach the breaker while the probe is in flight, however far
    # apart a loaded machine schedules the processes: the probe outlasts the suite's margin for a
    # stalled machine, and its permit outlasts the probe (an expired permit would count as failed).
    probe_seconds = LOADED_MACHINE_MARGIN
    recovery = 1.0
    fleet = fleet_factory(
        4,
        recovery_timeout=recovery,
        success_threshold=2,
        permit_ttl=probe_seconds + LOADED_MACHINE_MARGIN,
    )
    open_breaker(fleet, upstream)
    upstream.reset()
    upstream.set_mode("healthy", delay=probe_seconds)
    wait_recovered(fleet, redis_url, recovery)

    outcomes = fleet.all("burst", 20)

    assert total(outcomes, "ok") == 1
    assert total(outcomes, "open") == 79
    assert upstream.calls() == 1
    wait_until_sync(
        lambda: shared_state(redis_url).get("hok") == "1",
        within=PUBLISHED,
        what="the successful probe to be recorded",
    )
    assert shared_state(redis_url)["st"] == "half_open"

    # Success threshold 2: a second successful probe closes the breaker for the whole fleet.
    upstream.set_mode("healthy")
    assert fleet.one(2, "seq", 1) == {"ok": 1}
    wait_until_sync(
        lambda: fleet.all("refresh") == ["closed"] * 4, within=PUBLISHED, what="CLOSED everywhere"
    )
    assert fleet.all("burst", 5) == [{"ok": 5}] * 4
    assert upstream.calls() == 22


def test_failed_probe_reopens_with_backoff(
    fleet_factory: Callable[..., Fleet], upstream: FakeUpstream, redis_url: str
) -> None:
    # The second open period (recovery x backoff) outlasts a stalled machine, so every burst and
    # check below lands inside it.
    recovery, backoff = 1.0, 1 + 2 * LOADED_MACHINE_MARGIN
    fleet = fleet_factory(4, recovery_timeout=recovery, backoff_multiplier=backoff)
    open_breaker(fleet, upstream)
    upstream.reset()
    upstream.set_mode("503")
    wait_recovered(fleet, redis_url, recovery)

    outcomes = fleet.all("burst", 20)

    assert upstream.calls() == 1
    assert total(outcomes, "unavailable") == 1
    assert total(outcomes, "open") == 79
    wait_until_sync(
        lambda: shared_state(redis_url).get("gen") == "3",  # open, half_open, open
        within=PUBLISHED,
        what="the failed probe to re-open the breaker",
    )
    state = shared_state(redis_url)
    assert state["st"] == "open"
    # The second open period is recovery x backoff, not recovery again.
    remaining_ms = int(state["until"]) - redis_now_ms(redis_url)
    assert recovery * 1000 < remaining_ms <= recovery * backoff * 1000
    assert total(fleet.all("burst", 10), "open") == 40
    assert upstream.calls() == 1


def test_hung_probe_does_not_hold_half_open_past_its_permit(
    fleet_factory: Callable[..., Fleet], upstream: FakeUpstream, redis_url: str
) -> None:
    recovery, permit_ttl = 0.5, 1.5
    fleet = fleet_factory(2, recovery_timeout=recovery, permit_ttl=permit_ttl)
    open_breaker(fleet, upstream, calls=5)
    upstream.reset()
    upstream.set_mode("hang")
    wait_recovered(fleet, redis_url, recovery)

    fleet.one(0, "spawn")
    wait_until_sync(lambda: upstream.calls() == 1, within=PUBLISHED, what="the probe to arrive")
    assert fleet.one(0, "pending") == 1
    assert fleet.one(1, "refresh") == "half_open"

    # The probe never returns, yet once its permit expires the breaker re-opens...
    wait_until_sync(
        lambda: fleet.one(1, "refresh") == "open",
        within=permit_ttl,
        what="the expired permit to re-open the breaker",
    )
    assert fleet.one(0, "pending") == 1
    # ...and after that open period (recovery x 2) another probe gets through and closes it.
    upstream.set_mode("healthy")
    for probe in ("first", "second"):
        wait_until_sync(
            lambda: fleet.one(1, "seq", 1) == {"ok": 1},
            within=recovery * 2,
            what=f"the {probe} successful probe",
        )
    wait_until_sync(
        lambda: fleet.one(1, "refresh") == "closed", within=PUBLISHED, what="CLOSED again"
    )
    assert fleet.one(0, "pending") == 1


def test_redis_down_breakers_work_per_process(
    fleet_factory: Callable[..., Fleet],
    upstream: FakeUpstream,
    redis_server: RedisServer,
    redis_url: str,
) -> None:
    fleet = fleet_factory(2, recovery_timeout=60.0)
    redis_server.stop()
    upstream.set_mode("503")
    # The first decision after the outage notices it (and must not raise).
    assert fleet.all("refresh") == ["closed", "closed"]

    outcomes = fleet.all("seq", 20)

    for answer in outcomes:
        # Each process opens by itself after exactly the threshold's worth of failures.
        assert answer == {"unavailable": 5, "open": 15}
    assert fleet.all("view") == ["open", "open"]
    assert upstream.calls() == total(outcomes, "unavailable")
