"""Breaker policy in one process: real Redis, the fake upstream process, real HTTP calls."""

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.error_handlers import install_error_handlers
from app.services.circuit_breaker import (
    BreakerConfig,
    CircuitBreaker,
    CircuitOpenError,
    State,
    create_breakers,
)
from app.services.http_client import call_upstream
from app.services.redis import RedisService
from tests.services.circuit_breaker.fleet import outcome
from tests.support.fake_upstream import FakeUpstream
from tests.support.wait import wait_until

Make = Callable[..., CircuitBreaker]


@pytest.fixture
async def redis_service(redis_url: str) -> AsyncIterator[RedisService]:
    service = RedisService(Settings(redis_url=redis_url))
    await service.start()
    yield service
    await service.close()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
async def make(redis_service: RedisService) -> AsyncIterator[Make]:
    made: list[CircuitBreaker] = []

    def factory(
        name: str = "svc", redis: RedisService | None = redis_service, **config: Any
    ) -> CircuitBreaker:
        breaker = CircuitBreaker(name, BreakerConfig(**config), redis)
        made.append(breaker)
        return breaker

    yield factory
    for breaker in made:
        await breaker.close()


def caller(
    breaker: CircuitBreaker, http: httpx.AsyncClient, upstream: FakeUpstream, limit: float = 10.0
) -> Callable[[], Coroutine[Any, Any, httpx.Response]]:
    async def call() -> httpx.Response:
        return await call_upstream(breaker, limit, lambda: http.get(f"{upstream.url}/thing"))

    return call


async def wait_state(breaker: CircuitBreaker, state: State) -> None:
    """Refresh until the shared state is ``state`` (one published decision away)."""

    async def reached() -> bool:
        return await breaker.refresh() is state

    await wait_until(reached, within=breaker.config.sync_interval, what=f"{breaker.name} {state}")


async def test_4xx_storm_does_not_open(
    make: Make, http: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    breaker = make(failure_threshold=5, minimum_calls=10)
    upstream.set_mode("4xx", status=422)

    results = await asyncio.gather(*(outcome(caller(breaker, http, upstream)) for _ in range(60)))

    assert results == ["rejected"] * 60
    assert await breaker.refresh() is State.CLOSED
    assert upstream.calls() == 60


async def test_slow_calls_open_it(
    make: Make, http: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    breaker = make(
        failure_threshold=100,
        slow_call_duration=0.1,
        slow_call_rate_threshold=0.5,
        minimum_calls=5,
    )
    upstream.set_mode("healthy", delay=0.3)

    results = await asyncio.gather(*(outcome(caller(breaker, http, upstream)) for _ in range(8)))

    assert results == ["ok"] * 8
    assert await breaker.refresh() is State.OPEN
    assert await outcome(caller(breaker, http, upstream)) == "open"
    assert upstream.calls() == 8


@pytest.mark.parametrize("shared", [True, False], ids=["redis", "in-process"])
async def test_failure_rate_over_the_window_opens_it(
    make: Make, http: httpx.AsyncClient, upstream: FakeUpstream, shared: bool
) -> None:
    # Never 3 failures in a row, but 50% of the last calls failed.
    breaker = make(
        **({} if shared else {"redis": None}),
        failure_threshold=3,
        failure_rate_threshold=0.5,
        minimum_calls=10,
    )
    for index in range(10):
        upstream.set_mode("503" if index % 2 else "healthy")
        await outcome(caller(breaker, http, upstream))
        await breaker.refresh()
    assert breaker.state is State.OPEN
    assert breaker.describe()["shared"] is shared


@pytest.mark.parametrize("shared", [True, False], ids=["redis", "in-process"])
@pytest.mark.parametrize("window", ["seconds", "calls"])
async def test_count_window_weighs_only_the_last_calls(
    make: Make, http: httpx.AsyncClient, upstream: FakeUpstream, shared: bool, window: str
) -> None:
    by_calls = window == "calls"
    breaker = make(
        **({} if shared else {"redis": None}),
        failure_threshold=100,
        failure_rate_threshold=0.5,
        minimum_calls=10,
        window_calls=10 if by_calls else None,
    )

    async def run(mode: str, count: int) -> None:
        upstream.set_mode(mode)
        for _ in range(count):
            await outcome(caller(breaker, http, upstream))
            await breaker.refresh()  # one published batch per call

    await run("healthy", 20)
    await run("503", 4)
    assert breaker.state is State.CLOSED
    await run("503", 1)
    # Last 10 calls: 5 failures (50%). Last 60 s: 5 of 25 (20%).
    assert breaker.state is (State.OPEN if by_calls else State.CLOSED)


async def test_timeouts_count_and_retry_after_holds_it_open(
    make: Make, http: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    breaker = make(failure_threshold=2, recovery_timeout=1.0)
    upstream.set_mode("hang")
    assert await outcome(caller(breaker, http, upstream, limit=0.2)) == "unavailable"
    upstream.set_mode("503", retry_after=120)
    assert await outcome(caller(breaker, http, upstream)) == "unavailable"

    assert await breaker.refresh() is State.OPEN
    # Open for the upstream's Retry-After, not the 1 s recovery timeout.
    assert breaker.describe()["retry_after"] > 100
    with pytest.raises(CircuitOpenError) as error:
        await caller(breaker, http, upstream)()
    assert error.value.retry_after > 100


async def test_cancelled_calls_are_not_failures(
    make: Make, http: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    breaker = make(failure_threshold=1)
    upstream.set_mode("hang")
    tasks = [asyncio.create_task(caller(breaker, http, upstream)()) for _ in range(10)]

    async def all_received() -> bool:
        return upstream.calls() == 10

    await wait_until(all_received, within=1.0, what="every call to reach the upstream")
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

    assert await breaker.refresh() is State.CLOSED


async def test_operator_states_are_shared(
    make: Make, http: httpx.AsyncClient, upstream: FakeUpstream, redis_url: str
) -> None:
    other_redis = RedisService(Settings(redis_url=redis_url))
    await other_redis.start()
    try:
        here = make("ops", failure_threshold=1)
        there = make("ops", redis=other_redis, failure_threshold=1)

        assert await here.set_operator_state(State.FORCED_OPEN) is State.FORCED_OPEN
        assert await there.refresh() is State.FORCED_OPEN
        assert await outcome(caller(there, http, upstream)) == "open"
        assert upstream.calls() == 0

        await there.set_operator_state(State.DISABLED)
        assert await here.refresh() is State.DISABLED
        upstream.set_mode("503")
        # Disabled: calls pass and failures are not counted.
        results = [await outcome(caller(here, http, upstream)) for _ in range(5)]
        assert results == ["unavailable"] * 5
        assert await here.refresh() is State.DISABLED

        await here.set_operator_state(None)
        assert await there.refresh() is State.CLOSED
    finally:
        await other_redis.close()


async def test_fallback_and_decorator(make: Make) -> None:
    breaker = make(failure_threshold=1, recovery_timeout=60.0)

    async def fallback(exc: BaseException) -> str:
        return f"fallback after {type(exc).__name__}"

    @breaker.guard(fallback=fallback)
    async def fetch(value: str) -> str:
        if value == "boom":
            raise httpx.ConnectError("refused")
        return value

    assert await fetch("hello") == "hello"
    assert await fetch("boom") == "fallback after ConnectError"
    await wait_state(breaker, State.OPEN)
    assert await fetch("hello") == "fallback after CircuitOpenError"

    async def ok() -> str:
        return "direct"

    with pytest.raises(CircuitOpenError):
        await breaker.call(ok)


async def test_without_redis_same_state_machine(make: Make) -> None:
    breaker = make("solo", redis=None, failure_threshold=3, recovery_timeout=0.2)
    attempts = 0

    async def failing() -> None:
        nonlocal attempts
        attempts += 1
        raise httpx.ReadTimeout("slow")

    async def ok() -> str:
        return "ok"

    for _ in range(3):
        with pytest.raises(httpx.ReadTimeout):
            await breaker.call(failing)
    await wait_state(breaker, State.OPEN)
    with pytest.raises(CircuitOpenError):
        await breaker.call(failing)
    assert attempts == 3

    await asyncio.sleep(0.25)
    assert await breaker.call(ok) == "ok"  # first probe
    await wait_state(breaker, State.HALF_OPEN)
    assert await breaker.call(ok) == "ok"  # second probe: success threshold 2
    await wait_state(breaker, State.CLOSED)
    assert breaker.describe()["shared"] is False


async def test_circuit_open_error_renders_503_with_retry_after() -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/ai")
    async def ai() -> None:
        raise CircuitOpenError("gemini", 12.3)

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        response = await client.get("/ai")

    assert response.status_code == 503
    assert response.headers["retry-after"] == "13"
    assert response.json() == {
        "error": {
            "code": "circuit_open",
            "message": "The gemini service is temporarily unavailable.",
            "retry_after": 13,
            "service": "gemini",
        }
    }


async def test_registry_has_the_plan_breakers(redis_service: RedisService) -> None:
    registry = create_breakers(Settings(), redis_service)
    try:
        states = await registry.refresh()
        assert set(states) == {"gemini", "pinecone", "cloudinary", "s3"}
        assert registry["gemini"].config.recovery_timeout == 60.0
        assert registry["pinecone"].config.failure_threshold == 5
        assert all(item["state"] == "closed" and item["shared"] for item in states.values())
    finally:
        await registry.close()


@pytest.mark.parametrize("shared", [True, False], ids=["redis", "in-process"])
async def test_retry_after_never_exceeds_the_open_period(make: Make, shared: bool) -> None:
    breaker = make(**({} if shared else {"redis": None}), failure_threshold=1, recovery_timeout=30)

    async def failing() -> None:
        raise httpx.ConnectError("refused")

    async def ok() -> str:
        return "ok"

    with pytest.raises(httpx.ConnectError):
        await breaker.call(failing)
    # Called before the opening decision is back: this call waits for it, then fails fast.
    with pytest.raises(CircuitOpenError) as error:
        await breaker.call(ok)

    assert error.value.headers["Retry-After"] == "30"
    assert error.value.retry_after <= 30
