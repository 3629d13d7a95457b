"""Distributed circuit breakers: CLOSED -> OPEN -> HALF_OPEN, shared by every process through Redis.

Design (resilience4j semantics, made safe across processes):

* Every state decision is one Lua script run atomically in Redis on four keys that share the
  breaker's hash tag (``cb:{name}:s`` state hash, ``cb:{name}:w`` time-window buckets,
  ``cb:{name}:p`` probe permits, ``cb:{name}:c`` count-window batches), so N processes recording
  failures at once open the breaker exactly once, and exactly ``half_open_max_calls`` probes get
  a permit fleet-wide. Time is Redis's ``TIME``: no clock skew.
* The healthy path costs no Redis round trip: outcomes are counted in the process and published in
  batches (at once after any failure, otherwise every ``batch_size`` calls or ``sync_interval``
  seconds). Each publication returns the fleet state, so a failure storm opens the breaker for every
  process within one published batch.
* The breaker opens on ``failure_threshold`` consecutive failures, or when the failure rate or the
  slow-call rate over the last ``window_seconds`` (or the last ``window_calls`` calls, counted at
  batch granularity) reaches its threshold (after ``minimum_calls``).
  The open duration backs off exponentially on failed probes and honours an upstream's Retry-After.
* Probe permits expire after ``permit_ttl``: a probe that crashed or hangs past it counts as failed
  and the breaker re-opens instead of staying HALF_OPEN.
* Operators can force a breaker open or disable it at runtime (shared through Redis).
* Without Redis (not configured, or unreachable) the same state machine runs in the process.
"""

import asyncio
import functools
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any, ParamSpec, TypeVar

import botocore.exceptions
import httpx
import orjson
from prometheus_client import Counter, Gauge
from redis.exceptions import RedisError

from app.config import Settings
from app.errors import ServiceUnavailable
from app.services.redis import RedisService

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")
Fallback = Callable[[BaseException], Awaitable[T]]


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    DISABLED = "disabled"


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


def default_is_failure(exc: BaseException) -> bool:
    """Timeouts, connection errors and 5xx answers count; 4xx (our bad request) does not.

    Understands httpx (Gemini, Pinecone) and botocore (S3) errors.
    """
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code >= 500
    if isinstance(exc, botocore.exceptions.ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return int(status) >= 500
    return isinstance(
        exc,
        httpx.TransportError
        | TimeoutError
        | ConnectionError
        | botocore.exceptions.ConnectionError
        | botocore.exceptions.HTTPClientError,
    )


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


def default_retry_after(exc: BaseException) -> float | None:
    """The upstream's Retry-After, when the failure is an HTTP answer that carries one."""
    if isinstance(exc, httpx.HTTPStatusError):
        return parse_retry_after(exc.response.headers.get("retry-after"))
    return None


@dataclass(frozen=True)
class BreakerConfig:
    """Per-breaker policy. Durations in seconds; rates in 0..1 (None disables that rule)."""

    failure_threshold: int = 5
    recovery_timeout: float = 30.0
    success_threshold: int = 2
    half_open_max_calls: int = 1
    permit_ttl: float = 30.0
    failure_rate_threshold: float | None = 0.5
    slow_call_rate_threshold: float | None = 1.0
    slow_call_duration: float | None = None
    minimum_calls: int = 20
    window_seconds: int = 60
    # Count-based window instead of the time-based one: the last N calls (whole batches).
    window_calls: int | None = None
    backoff_multiplier: float = 2.0
    max_open_duration: float = 600.0
    batch_size: int = 100
    sync_interval: float = 1.0
    is_failure: Callable[[BaseException], bool] = default_is_failure
    retry_after_of: Callable[[BaseException], float | None] = default_retry_after
    state_ttl: float = 86_400.0

    def script_json(self) -> bytes:
        """The numbers the Lua scripts need (milliseconds and permille: Lua returns integers)."""

        def permille(rate: float | None) -> int:
            return 1001 if rate is None else round(rate * 1000)

        return orjson.dumps(
            {
                "threshold": self.failure_threshold,
                "recovery": round(self.recovery_timeout * 1000),
                "backoff": self.backoff_multiplier,
                "max_open": round(self.max_open_duration * 1000),
                "min_calls": self.minimum_calls,
                "window": self.window_seconds,
                "window_calls": self.window_calls or 0,
                "rate": permille(self.failure_rate_threshold),
                "slow_rate": permille(
                    self.slow_call_rate_threshold if self.slow_call_duration is not None else None
                ),
                "half_max": self.half_open_max_calls,
                "success": self.success_threshold,
                "permit_ttl": round(self.permit_ttl * 1000),
                "ttl": round(self.state_ttl * 1000),
            }
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The shared state as one decision left it. ``remaining``: seconds until OPEN ends (or until
    the oldest probe permit expires in HALF_OPEN); ``moved``: the state this decision moved to."""

    state: State
    generation: int
    remaining: float
    moved: State | None = None
    verdict: str = ""


# --- Lua (Redis 7: TIME inside scripts is allowed with effects replication) ----------------------
# Every script: KEYS[1] state hash, KEYS[2] time-window hash, KEYS[3] permit zset, KEYS[4]
# count-window list (one hash tag);
# ARGV[1] the config JSON (BreakerConfig.script_json). Returns
# {state, generation, remaining_ms, operator, moved, verdict}.
_PRELUDE = """
local S, W, P, C = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local cfg = cjson.decode(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local h = redis.call('HMGET', S, 'st', 'gen', 'until', 'opens', 'consec', 'hok', 'op')
local st = h[1] or 'closed'
local gen = tonumber(h[2]) or 0
local open_until = tonumber(h[3]) or 0
local opens = tonumber(h[4]) or 0
local consec = tonumber(h[5]) or 0
local hok = tonumber(h[6]) or 0
local op = h[7] or ''
local moved = ''
local dirty = false
local function open(hold)
  local d = cfg.recovery * math.pow(cfg.backoff, opens)
  if hold > d then d = hold end
  if d > cfg.max_open then d = cfg.max_open end
  st = 'open'; open_until = now + math.floor(d); opens = opens + 1
  consec = 0; hok = 0; gen = gen + 1; moved = 'open'; dirty = true
  redis.call('DEL', W, P, C)
end
local function close()
  st = 'closed'; open_until = 0; opens = 0; consec = 0; hok = 0
  gen = gen + 1; moved = 'closed'; dirty = true
  redis.call('DEL', W, P, C)
end
local function finish(verdict)
  if dirty then
    redis.call('HSET', S, 'st', st, 'gen', gen, 'until', open_until, 'opens', opens,
      'consec', consec, 'hok', hok, 'op', op)
    redis.call('PEXPIRE', S, cfg.ttl)
  end
  local remaining = 0
  if st == 'open' then
    remaining = open_until - now
  elseif st == 'half_open' then
    local first = redis.call('ZRANGE', P, 0, 0, 'WITHSCORES')
    if first[2] and redis.call('ZCARD', P) >= cfg.half_max then
      remaining = tonumber(first[2]) - now
    end
  end
  if remaining < 0 then remaining = 0 end
  return {st, gen, remaining, op, moved, verdict}
end
-- A probe that outlived its permit counts as failed: re-open rather than wedge in HALF_OPEN.
if st == 'half_open' and redis.call('ZCOUNT', P, '-inf', now) > 0 then open(0) end
"""

# ARGV[2] generation the counts belong to (-1: unknown), ARGV[3] calls, ARGV[4] failures,
# ARGV[5] slow calls, ARGV[6] failures since the batch's last success, ARGV[7] 1 if the batch had a
# success, ARGV[8] Retry-After hold in ms. Counts only apply to a CLOSED breaker of that generation.
_REPORT = (
    _PRELUDE
    + """
local rgen = tonumber(ARGV[2])
local calls = tonumber(ARGV[3])
if st == 'closed' and op == '' and calls > 0 and (rgen < 0 or rgen == gen) then
  local fails, slow = tonumber(ARGV[4]), tonumber(ARGV[5])
  local c, f, s = 0, 0, 0
  if cfg.window_calls > 0 then
    -- Newest batch first; keep just enough batches to cover the last window_calls calls.
    redis.call('LPUSH', C, calls .. ':' .. fails .. ':' .. slow)
    local entries = redis.call('LRANGE', C, 0, -1)
    local keep = #entries
    for i = 1, #entries do
      local bc, bf, bs = string.match(entries[i], '(%d+):(%d+):(%d+)')
      c, f, s = c + tonumber(bc), f + tonumber(bf), s + tonumber(bs)
      if c >= cfg.window_calls then keep = i; break end
    end
    redis.call('LTRIM', C, 0, keep - 1)
    redis.call('PEXPIRE', C, cfg.ttl)
  else
    local sec = math.floor(now / 1000)
    redis.call('HINCRBY', W, 'c' .. sec, calls)
    if fails > 0 then redis.call('HINCRBY', W, 'f' .. sec, fails) end
    if slow > 0 then redis.call('HINCRBY', W, 's' .. sec, slow) end
    redis.call('PEXPIRE', W, cfg.window * 1000 + 1000)
    local all = redis.call('HGETALL', W)
    for i = 1, #all, 2 do
      if tonumber(string.sub(all[i], 2)) <= sec - cfg.window then
        redis.call('HDEL', W, all[i])
      else
        local kind, v = string.sub(all[i], 1, 1), tonumber(all[i + 1])
        if kind == 'c' then c = c + v elseif kind == 'f' then f = f + v else s = s + v end
      end
    end
  end
  if tonumber(ARGV[7]) == 1 then consec = tonumber(ARGV[6]) else consec = consec + fails end
  dirty = true
  if consec >= cfg.threshold
    or (c >= cfg.min_calls and (f * 1000 >= cfg.rate * c or s * 1000 >= cfg.slow_rate * c)) then
    open(tonumber(ARGV[8]))
  end
end
return finish('')
"""
)

# ARGV[2] permit id. Verdict: 'permit' (run as a probe), 'pass' (closed/disabled) or 'reject'.
_ACQUIRE = (
    _PRELUDE
    + """
if op == 'forced_open' then return finish('reject') end
if op == 'disabled' then return finish('pass') end
if st == 'open' and now >= open_until then
  st = 'half_open'; hok = 0; gen = gen + 1; moved = 'half_open'; dirty = true
  redis.call('DEL', P)
end
if st == 'closed' then return finish('pass') end
if st == 'open' then return finish('reject') end
if redis.call('ZCARD', P) < cfg.half_max then
  redis.call('ZADD', P, now + cfg.permit_ttl, ARGV[2])
  redis.call('PEXPIRE', P, cfg.ttl)
  return finish('permit')
end
return finish('reject')
"""
)

# ARGV[2] permit id, ARGV[3] outcome ('success' | 'failure' | 'ignore'), ARGV[4] hold ms.
# An expired permit was already counted as a failure by the prelude: its outcome is ignored.
_RELEASE = (
    _PRELUDE
    + """
if redis.call('ZREM', P, ARGV[2]) == 1 and st == 'half_open' then
  if ARGV[3] == 'success' then
    hok = hok + 1; dirty = true
    if hok >= cfg.success then close() end
  elseif ARGV[3] == 'failure' then
    open(tonumber(ARGV[4]))
  end
end
return finish('')
"""
)

# ARGV[2] operator state: '' (automatic), 'forced_open' or 'disabled'. Any change resets to CLOSED.
_OPERATOR = (
    _PRELUDE
    + """
if ARGV[2] ~= op then
  op = ARGV[2]
  close()
  if op ~= '' then moved = op end
end
return finish('')
"""
)

_SNAPSHOT = _PRELUDE + "return finish('')\n"

_SCRIPTS = {
    "report": _REPORT,
    "acquire": _ACQUIRE,
    "release": _RELEASE,
    "operator": _OPERATOR,
    "snapshot": _SNAPSHOT,
}


def _visible(state: str, operator: str) -> State:
    return State(operator) if operator else State(state)


def _decode(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _parse_reply(reply: Any) -> Snapshot:
    state, generation, remaining_ms, operator, moved, verdict = reply
    moved = _decode(moved)
    return Snapshot(
        state=_visible(_decode(state), _decode(operator)),
        generation=int(generation),
        remaining=int(remaining_ms) / 1000,
        moved=State(moved) if moved else None,
        verdict=_decode(verdict),
    )


@dataclass
class _LocalMachine:
    """The same state machine as the Lua scripts, for one process (no Redis, or Redis down)."""

    config: BreakerConfig
    state: str = "closed"
    generation: int = 0
    open_until: float = 0.0
    opens: int = 0
    consecutive: int = 0
    half_open_successes: int = 0
    operator: str = ""
    window: dict[int, list[int]] = field(default_factory=dict)
    batches: deque[tuple[int, int, int]] = field(default_factory=deque)
    permits: dict[str, float] = field(default_factory=dict)
    moved: str = ""

    def seed(self, snapshot: Snapshot, now: float) -> None:
        """Continue from the last shared state this process saw (Redis just became unreachable)."""
        if snapshot.state in (State.FORCED_OPEN, State.DISABLED):
            self.operator, self.state = snapshot.state.value, "closed"
        elif snapshot.state is State.CLOSED:
            self.operator, self.state = "", "closed"
        else:
            # OPEN or HALF_OPEN: stay open for what was left (a probe permit is not carried over).
            self.operator, self.state = "", "open"
            self.open_until = now + snapshot.remaining
        self.window.clear()
        self.batches.clear()
        self.permits.clear()
        self.consecutive = self.half_open_successes = 0

    def _begin(self, now: float) -> None:
        self.moved = ""
        if self.state == "half_open" and any(exp <= now for exp in self.permits.values()):
            self._open(0.0, now)

    def _open(self, hold: float, now: float) -> None:
        cfg = self.config
        duration = cfg.recovery_timeout * cfg.backoff_multiplier**self.opens
        duration = min(max(duration, hold), cfg.max_open_duration)
        self.state, self.open_until = "open", now + duration
        self.opens += 1
        self.consecutive = self.half_open_successes = 0
        self.generation += 1
        self.moved = "open"
        self.window.clear()
        self.batches.clear()
        self.permits.clear()

    def _close(self) -> None:
        self.state, self.open_until = "closed", 0.0
        self.opens = self.consecutive = self.half_open_successes = 0
        self.generation += 1
        self.moved = "closed"
        self.window.clear()
        self.batches.clear()
        self.permits.clear()

    def _finish(self, now: float, verdict: str = "") -> Snapshot:
        remaining = 0.0
        if self.state == "open":
            remaining = self.open_until - now
        elif self.state == "half_open" and len(self.permits) >= self.config.half_open_max_calls:
            remaining = min(self.permits.values()) - now
        return Snapshot(
            state=_visible(self.state, self.operator),
            generation=self.generation,
            remaining=max(remaining, 0.0),
            moved=State(self.moved) if self.moved else None,
            verdict=verdict,
        )

    def report(
        self,
        generation: int,
        calls: int,
        failures: int,
        slow: int,
        trailing: int,
        had_success: bool,
        hold: float,
        now: float,
    ) -> Snapshot:
        self._begin(now)
        cfg = self.config
        if (
            self.state == "closed"
            and not self.operator
            and calls > 0
            and generation in (-1, self.generation)
        ):
            total = self._count(calls, failures, slow, now)
            self.consecutive = trailing if had_success else self.consecutive + failures
            if self.consecutive >= cfg.failure_threshold or (
                total[0] >= cfg.minimum_calls
                and (
                    _reached(total[1], total[0], cfg.failure_rate_threshold)
                    or (
                        cfg.slow_call_duration is not None
                        and _reached(total[2], total[0], cfg.slow_call_rate_threshold)
                    )
                )
            ):
                self._open(hold, now)
        return self._finish(now)

    def _count(self, calls: int, failures: int, slow: int, now: float) -> list[int]:
        """Add a batch to the window; the window's (calls, failures, slow) totals."""
        cfg = self.config
        if cfg.window_calls:
            self.batches.appendleft((calls, failures, slow))
            total, keep = [0, 0, 0], len(self.batches)
            for index, batch in enumerate(self.batches, 1):
                total = [a + b for a, b in zip(total, batch, strict=True)]
                if total[0] >= cfg.window_calls:
                    keep = index
                    break
            while len(self.batches) > keep:
                self.batches.pop()
            return total
        second = int(now)
        bucket = self.window.setdefault(second, [0, 0, 0])
        bucket[0] += calls
        bucket[1] += failures
        bucket[2] += slow
        for old in [sec for sec in self.window if sec <= second - cfg.window_seconds]:
            del self.window[old]
        return [sum(b[i] for b in self.window.values()) for i in range(3)]

    def acquire(self, permit: str, now: float) -> Snapshot:
        self._begin(now)
        if self.operator == "forced_open":
            return self._finish(now, "reject")
        if self.operator == "disabled":
            return self._finish(now, "pass")
        if self.state == "open" and now >= self.open_until:
            self.state, self.half_open_successes = "half_open", 0
            self.generation += 1
            self.moved = "half_open"
            self.permits.clear()
        if self.state == "closed":
            return self._finish(now, "pass")
        if self.state == "open":
            return self._finish(now, "reject")
        if len(self.permits) < self.config.half_open_max_calls:
            self.permits[permit] = now + self.config.permit_ttl
            return self._finish(now, "permit")
        return self._finish(now, "reject")

    def release(self, permit: str, outcome: str, hold: float, now: float) -> Snapshot:
        self._begin(now)
        if self.permits.pop(permit, None) is not None and self.state == "half_open":
            if outcome == "success":
                self.half_open_successes += 1
                if self.half_open_successes >= self.config.success_threshold:
                    self._close()
            elif outcome == "failure":
                self._open(hold, now)
        return self._finish(now)

    def set_operator(self, operator: str, now: float) -> Snapshot:
        self._begin(now)
        if operator != self.operator:
            self.operator = operator
            self._close()
            if operator:
                self.moved = operator
        return self._finish(now)

    def snapshot(self, now: float) -> Snapshot:
        self._begin(now)
        return self._finish(now)


def _reached(count: int, total: int, rate: float | None) -> bool:
    # Same integer arithmetic as the Lua (permille), so both backends decide alike.
    threshold = 1001 if rate is None else round(rate * 1000)
    return count * 1000 >= threshold * total


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
        self._local = _LocalMachine(config)
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
        """Force the breaker open, disable it, or (None) return it to automatic CLOSED."""
        if state not in (None, State.FORCED_OPEN, State.DISABLED):
            raise ValueError("operator state must be forced_open, disabled or None")
        operator = state.value if state is not None else ""
        snap = await self._decide(
            "operator", [operator], lambda now: self._local.set_operator(operator, now)
        )
        self._apply(snap)
        return self._state

    def describe(self) -> dict[str, Any]:
        """This process's view, JSON-able (for /health/detailed)."""
        remaining = max(self._until - time.monotonic(), 0.0) if self._state is State.OPEN else 0.0
        return {
            "state": self._state.value,
            "retry_after": round(remaining, 3),
            "shared": self._shared,
            "failure_threshold": self.config.failure_threshold,
            "recovery_timeout": self.config.recovery_timeout,
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
                self._scripts = {key: redis.script(lua) for key, lua in _SCRIPTS.items()}
            try:
                reply = await self._scripts[script](
                    keys=self._keys, args=[self._config_json, *args]
                )
            except RedisError as exc:
                redis.mark_failure(exc)
            else:
                redis.mark_success()
                self._shared = True
                return _parse_reply(reply)
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


# The plan's breakers: failures before opening, recovery seconds.
PLAN_BREAKERS: dict[str, tuple[int, float]] = {
    "gemini": (5, 60.0),
    "pinecone": (5, 30.0),
    "cloudinary": (5, 30.0),
    "supabase_storage": (5, 30.0),
}


class BreakerRegistry:
    """The process's breakers by name."""

    def __init__(self, settings: Settings, redis: RedisService | None) -> None:
        self._settings = settings
        self._redis = redis
        self._breakers: dict[str, CircuitBreaker] = {}

    def add(self, name: str, config: BreakerConfig | None = None) -> CircuitBreaker:
        """Create (or replace) a breaker; without config, the settings' defaults."""
        config = config or BreakerConfig(
            failure_threshold=self._settings.circuit_breaker_failure_threshold,
            recovery_timeout=self._settings.circuit_breaker_recovery_timeout,
        )
        breaker = CircuitBreaker(name, config, self._redis)
        self._breakers[name] = breaker
        return breaker

    def get(self, name: str) -> CircuitBreaker:
        """The breaker called ``name``, created with the default policy on first use."""
        breaker = self._breakers.get(name)
        return breaker if breaker is not None else self.add(name)

    def __getitem__(self, name: str) -> CircuitBreaker:
        return self._breakers[name]

    def states(self) -> dict[str, dict[str, Any]]:
        """Every breaker's state as this process sees it (JSON-able, no I/O)."""
        return {name: breaker.describe() for name, breaker in sorted(self._breakers.items())}

    async def refresh(self) -> dict[str, dict[str, Any]]:
        """Read every breaker's shared state, then return :meth:`states`."""
        await asyncio.gather(*(breaker.refresh() for breaker in self._breakers.values()))
        return self.states()

    async def close(self) -> None:
        """Stop every breaker's background publication."""
        await asyncio.gather(*(breaker.close() for breaker in self._breakers.values()))


def create_breakers(settings: Settings, redis: RedisService | None) -> BreakerRegistry:
    """The registry with the plan's pre-configured breakers (success threshold 2 in half-open)."""
    registry = BreakerRegistry(settings, redis)
    for name, (failures, recovery) in PLAN_BREAKERS.items():
        registry.add(
            name,
            BreakerConfig(
                failure_threshold=failures, recovery_timeout=recovery, success_threshold=2
            ),
        )
    return registry
