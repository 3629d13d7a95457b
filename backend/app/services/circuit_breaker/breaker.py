"""The circuit breaker: this process's view of one shared breaker, and calls made through it.

The healthy path costs no Redis round trip: outcomes are counted here and published in batches
(at once after any failure, otherwise every ``batch_size`` calls or ``sync_interval`` seconds).
Every decision runs one script in Redis (scripts.py), or the in-process twin (local.py) when Redis
is absent or unreachable, and returns the state this process then applies.
"""

import asyncio
import functools
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from prometheus_client import Counter, Gauge
from redis.exceptions import RedisError

from app.errors import ServiceUnavailable
from app.services.circuit_breaker.local import LocalMachine
from app.services.circuit_breaker.policy import BreakerConfig
from app.services.circuit_breaker.scripts import SCRIPTS, parse_reply
from app.services.circuit_breaker.state import Snapshot, State
from app.services.redis import RedisService

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")
Fallback = Callable[[BaseException], Awaitable[T]]

# The state gauge's values, in State's order.
_STATE_VALUES = {state: index for index, state in enumerate(State)}

TRANSITIONS = Counter(
    "hiringpro_circuit_breaker_transitions_total",
    "Circuit breaker state transitions made by this process.",
    ["breaker", "state"],
)
STATE = Gauge(
    "hiringpro_circuit_breaker_state",
    "Current breaker state as seen by this process "
    "(0 closed, 1 open, 2 half_open, 3 forced_open, 4 disabled).",
    ["breaker"],
    # Under gunicorn: the highest value among live workers (dead workers' values are dropped).
    multiprocess_mode="livemax",
)
REJECTED = Counter(
    "hiringpro_circuit_breaker_rejected_total",
    "Calls failed fast because the breaker was open.",
    ["breaker"],
)


class CircuitOpenError(ServiceUnavailable):
    """The breaker is open: the call was not attempted. Rendered as 503 with Retry-After."""

    code = "circuit_open"

    def __init__(self, name: str, retry_after: float) -> None:
        seconds = max(1, math.ceil(retry_after))
        super().__init__(
            f"The {name} service is temporarily unavailable.",
            headers={"Retry-After": str(seconds)},
            retry_after=seconds,
            service=name,
        )
        self.name = name
        self.retry_after = retry_after


class CircuitBreaker:
    """One named breaker. Use ``await breaker.call(lambda: fn(...), fallback=...)`` or
    ``@breaker.guard()`` on an async function."""

    def __init__(self, name: str, config: BreakerConfig, redis: RedisService | None) -> None:
        self.name = name
        self.config = config
        self._redis = redis
        self._keys = [f"cb:{{{name}}}:{suffix}" for suffix in ("s", "w", "p", "c")]
        self._config_json = config.script_json()
        self._scripts: dict[str, Any] | None = None
        self._local = LocalMachine(config)
        self._shared = False  # whether the last decision came from Redis
        # This process's view of the shared state.
        self._state = State.CLOSED
        self._generation = -1
        self._until = 0.0
        self._next_sync = 0.0
        self._acquiring = False
        # Outcomes not yet published.
        self._calls = 0
        self._failures = 0
        self._slow = 0
        self._trailing = 0
        self._had_success = False
        # Consecutive failures seen here and not yet answered by a shared decision.
        self._streak = 0
        self._hold = 0.0
        self._flush_task: asyncio.Task[None] | None = None
        self._flush_again = False
        self._background: set[asyncio.Task[None]] = set()
        STATE.labels(name).set(_STATE_VALUES[State.CLOSED])

    # --- public API --------------------------------------------------------------------------

    @property
    def state(self) -> State:
        """The state as this process last saw it (no I/O)."""
        return self._state

    async def call(
        self, func: Callable[[], Awaitable[T]], *, fallback: Fallback[T] | None = None
    ) -> T:
        """Run ``func()`` through the breaker.

        Raises CircuitOpenError when the breaker is open; with ``fallback``, returns
        ``await fallback(exc)`` instead when the call is rejected or fails with a counted error.
        """
        now = time.monotonic()
        if now >= self._next_sync:
            self._next_sync = now + self.config.sync_interval
            self._schedule_flush()
        if self._streak >= self.config.failure_threshold:
            await self._await_decision()
            # The wait is neither open time already served nor part of the call's duration.
            now = time.monotonic()
        if self._state is not State.CLOSED and self._state is not State.DISABLED:
            try:
                permit = await self._admit(now)
            except CircuitOpenError as exc:
                if fallback is None:
                    raise
                return await fallback(exc)
            if permit is not None:
                return await self._probe(func, permit, now, fallback)
        try:
            result = await func()
        except BaseException as exc:
            counted = self._record_error(exc, now)
            if fallback is not None and counted:
                return await fallback(exc)
            raise
        self._record_success(now)
        return result

    def guard(
        self, fallback: Fallback[T] | None = None
    ) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
        """Decorator form of :meth:`call`."""

        def decorate(func: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
            @functools.wraps(func)
            async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
                return await self.call(lambda: func(*args, **kwargs), fallback=fallback)

            return wrapper

        return decorate

    async def refresh(self) -> State:
        """Publish pending counts and read the shared state now."""
        await self._flush()
        return self._state

    async def set_operator_state(self, state: State | None) -> State:
        """Force the breaker open, disable it, or (None) return it to automatic control.

        Any change of operator state starts the automatic state machine afresh, CLOSED.
        """
        if state not in (None, State.FORCED_OPEN, State.DISABLED):
            raise ValueError("operator state must be forced_open, disabled or None")
        operator = state.value if state is not None else ""
        snap = await self._decide(
            "operator", [operator], lambda now: self._local.set_operator(operator, now)
        )
        self._apply(snap)
        return self._state

    def describe(self) -> dict[str, Any]:
        """This process's view and the policy's main numbers, JSON-able (no I/O)."""
        remaining = max(self._until - time.monotonic(), 0.0) if self._state is State.OPEN else 0.0
        return {
            "state": self._state.value,
            "retry_after": round(remaining, 3),
            "shared": self._shared,
            "failure_threshold": self.config.failure_threshold,
            "recovery_timeout": self.config.recovery_timeout,
            "success_threshold": self.config.success_threshold,
            "half_open_max_calls": self.config.half_open_max_calls,
        }

    async def close(self) -> None:
        """Stop background publication (at shutdown)."""
        tasks = [*self._background, *([self._flush_task] if self._flush_task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- recording ---------------------------------------------------------------------------

    def _record_success(self, started: float) -> None:
        if self._state is not State.CLOSED:
            return
        self._calls += 1
        self._slow += self._is_slow(started)
        self._trailing = self._streak = 0
        self._had_success = True
        if self._calls >= self.config.batch_size:
            self._schedule_flush()

    def _record_error(self, exc: BaseException, started: float) -> bool:
        """Count the error; returns whether it counts as a failure."""
        if not isinstance(exc, Exception):
            # Cancellation (client went away, shutdown) says nothing about the upstream.
            return False
        if not self.config.is_failure(exc):
            # The upstream answered (e.g. 4xx for our bad request): it is healthy.
            self._record_success(started)
            return False
        if self._state is State.CLOSED:
            self._calls += 1
            self._failures += 1
            self._slow += self._is_slow(started)
            self._trailing += 1
            self._streak += 1
            self._hold = max(self._hold, self.config.retry_after_of(exc) or 0.0)
            self._schedule_flush()
        return True

    async def _probe(
        self,
        func: Callable[[], Awaitable[T]],
        permit: str,
        started: float,
        fallback: Fallback[T] | None,
    ) -> T:
        """Run one HALF_OPEN probe and report its outcome before returning."""
        try:
            result = await func()
        except Exception as exc:
            failed = self.config.is_failure(exc)
            hold = (self.config.retry_after_of(exc) or 0.0) if failed else 0.0
            outcome = "failure" if failed or self._is_slow(started) else "success"
            await self._run_release(permit, outcome, hold)
            if failed and fallback is not None:
                return await fallback(exc)
            raise
        except BaseException:
            # Cancelled: give the permit back without a verdict (from a task: we are cancelled).
            self._release_later(permit)
            raise
        await self._run_release(permit, "failure" if self._is_slow(started) else "success", 0.0)
        return result

    async def _await_decision(self) -> None:
        """This process alone saw enough failures in a row to open the breaker: rather than send
        more calls to a failing upstream, wait the one round trip for the fleet's decision."""
        task = self._flush_task
        if task is not None and not task.done():
            await asyncio.shield(task)

    def _is_slow(self, started: float) -> bool:
        limit = self.config.slow_call_duration
        return limit is not None and time.monotonic() - started > limit

    # --- admission while not CLOSED -----------------------------------------------------------

    async def _admit(self, now: float) -> str | None:
        """A probe permit id, None to run as a normal call, or CircuitOpenError."""
        if self._state is State.FORCED_OPEN or now < self._until or self._acquiring:
            raise self._rejection(now)
        # One acquisition in flight per process: concurrent callers fail fast meanwhile.
        self._acquiring = True
        permit = uuid.uuid4().hex
        try:
            snap = await self._decide(
                "acquire", [permit], lambda at: self._local.acquire(permit, at)
            )
        finally:
            self._acquiring = False
        self._apply(snap)
        if snap.verdict == "permit":
            return permit
        if snap.verdict == "pass":
            return None
        raise self._rejection(time.monotonic())

    def _rejection(self, now: float) -> CircuitOpenError:
        REJECTED.labels(self.name).inc()
        if self._state is State.FORCED_OPEN:
            retry_after = self.config.recovery_timeout
        else:
            retry_after = max(self._until - now, self.config.sync_interval)
        return CircuitOpenError(self.name, retry_after)

    def _release_later(self, permit: str) -> None:
        task = asyncio.get_running_loop().create_task(self._run_release(permit, "ignore", 0.0))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _run_release(self, permit: str, outcome: str, hold: float) -> None:
        try:
            snap = await self._decide(
                "release",
                [permit, outcome, round(hold * 1000)],
                lambda now: self._local.release(permit, outcome, hold, now),
            )
        except Exception:
            logger.exception("circuit breaker %s: releasing a probe permit failed", self.name)
            return
        self._apply(snap)

    # --- publication -------------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.get_running_loop().create_task(self._flush_loop())
        else:
            self._flush_again = True

    async def _flush_loop(self) -> None:
        try:
            while True:
                self._flush_again = False
                await self._flush()
                if not self._flush_again:
                    return
        except Exception:
            logger.exception("circuit breaker %s: publishing outcomes failed", self.name)

    async def _flush(self) -> None:
        generation, calls, failures, slow = (
            self._generation,
            self._calls,
            self._failures,
            self._slow,
        )
        trailing, had_success, hold = self._trailing, self._had_success, self._hold
        self._calls = self._failures = self._slow = self._trailing = 0
        self._had_success, self._hold = False, 0.0
        snap = await self._decide(
            "report",
            [generation, calls, failures, slow, trailing, int(had_success), round(hold * 1000)],
            lambda now: self._local.report(
                generation, calls, failures, slow, trailing, had_success, hold, now
            ),
        )
        self._apply(snap)

    async def _decide(
        self, script: str, args: list[str | int], local: Callable[[float], Snapshot]
    ) -> Snapshot:
        """Run one decision in Redis, or in the process when Redis is absent or unreachable."""
        redis = self._redis
        if redis is not None and redis.client is not None and redis.available:
            if self._scripts is None:
                self._scripts = {key: redis.script(lua) for key, lua in SCRIPTS.items()}
            try:
                reply = await self._scripts[script](
                    keys=self._keys, args=[self._config_json, *args]
                )
            except RedisError as exc:
                redis.mark_failure(exc)
            else:
                redis.mark_success()
                self._shared = True
                return parse_reply(reply)
        now = time.monotonic()
        if self._shared:
            self._shared = False
            self._local.seed(
                Snapshot(self._state, self._generation, max(self._until - now, 0.0)), now
            )
        return local(now)

    def _apply(self, snap: Snapshot) -> None:
        now = time.monotonic()
        if snap.state is not self._state:
            STATE.labels(self.name).set(_STATE_VALUES[snap.state])
        if snap.moved is not None or snap.state is not State.CLOSED:
            self._streak = 0
        if snap.generation != self._generation and self._generation != -1:
            # Counts gathered under another generation no longer describe this state.
            self._calls = self._failures = self._slow = self._trailing = 0
            self._had_success, self._hold = False, 0.0
        self._state = snap.state
        self._generation = snap.generation
        remaining = snap.remaining
        if snap.state is State.HALF_OPEN:
            # Probes elsewhere: fail fast locally, but look again soon.
            remaining = min(remaining, self.config.sync_interval)
        self._until = now + remaining
        if snap.moved is not None:
            # Only the process whose decision made the transition logs and counts it.
            TRANSITIONS.labels(self.name, snap.moved.value).inc()
            logger.warning(
                "circuit breaker %s -> %s%s",
                self.name,
                snap.moved.value,
                f" for {snap.remaining:.1f}s" if snap.moved is State.OPEN else "",
                extra={"breaker": self.name, "state": snap.moved.value},
            )
