"""Token buckets in Redis: the decision types, the atomic Lua script, its batching runner, and
the cache of Redis refusals. local_buckets.py is the in-process twin of the script.

Exact arithmetic: a bucket's level is an integer count of "units", one token being `period_us`
units, and refilling adds `refill` units per microsecond, so `refill` tokens arrive every period
with no rounding (integers stay far below 2**53, where Lua's doubles are still exact).
"""

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass

import redis
import redis.asyncio
from redis.crc import key_slot

from app.services.redis import RedisService

# KEYS: the bucket keys of every decision, decision after decision.
# ARGV[1]: the number of decisions D. ARGV[2]: the number of bucket layouts L (a tier's buckets),
#   then each layout: its bucket count B, then per bucket capacity (tokens), refill (tokens per
#   period), period (microseconds = units per token); then D layout numbers (1-based), one per
#   decision. Decisions of one tier share their layout, which keeps the call small.
# Returns 4 integers per decision: allowed (1/0), remaining tokens, retry-after (us; 0 when
#   allowed), reset (us until every bucket of the decision is full again).
# One token is taken from every bucket of a decision or from none (a refusal burns nothing).
# Time is the server's own (TIME), so the clocks of the web hosts never matter. A bucket's key
# lives exactly as long as it takes to refill, after which a missing key means "full".
TOKEN_BUCKET_LUA = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local layouts = {}
local arg = 3
for l = 1, tonumber(ARGV[2]) do
  local layout = {}
  for b = 1, tonumber(ARGV[arg]) do
    layout[b] = {tonumber(ARGV[arg + 3 * b - 2]), tonumber(ARGV[arg + 3 * b - 1]),
                 tonumber(ARGV[arg + 3 * b])}
  end
  arg = arg + 1 + 3 * #layout
  layouts[l] = layout
end
local out = {}
local first_key = 1
for d = 1, tonumber(ARGV[1]) do
  local layout = layouts[tonumber(ARGV[arg + d - 1])]
  local count = #layout
  local levels, fulls, rates, units = {}, {}, {}, {}
  local allowed = 1
  local wait = 0
  for b = 1, count do
    local unit = layout[b][3]
    local full = layout[b][1] * unit
    local rate = layout[b][2]
    local level = full
    local state = redis.call('HMGET', KEYS[first_key + b - 1], 'l', 't')
    if state[1] then
      level = tonumber(state[1])
      local elapsed = now - tonumber(state[2])
      if elapsed > 0 then
        -- elapsed >= full already refills everything (rate >= 1); capping keeps products exact.
        if elapsed > full then elapsed = full end
        level = math.min(full, level + elapsed * rate)
      end
    end
    if level < unit then
      allowed = 0
      wait = math.max(wait, math.ceil((unit - level) / rate))
    end
    levels[b], fulls[b], rates[b], units[b] = level, full, rate, unit
  end
  local remaining = -1
  local reset = 0
  for b = 1, count do
    local level = levels[b]
    if allowed == 1 then
      level = level - units[b]
      local key = KEYS[first_key + b - 1]
      redis.call('HSET', key, 'l', string.format('%.0f', level), 't', string.format('%.0f', now))
      redis.call('PEXPIRE', key, math.ceil((fulls[b] - level) / rates[b] / 1000) + 1)
    end
    local tokens = math.floor(level / units[b])
    if remaining < 0 or tokens < remaining then remaining = tokens end
    reset = math.max(reset, math.ceil((fulls[b] - level) / rates[b]))
  end
  first_key = first_key + count
  out[#out + 1] = allowed
  out[#out + 1] = remaining
  out[#out + 1] = wait
  out[#out + 1] = reset
end
return out
"""


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one request against all of its buckets."""

    allowed: bool
    remaining: int
    retry_after_us: int
    reset_us: int


class BucketSpecs:
    """A tier's buckets as (capacity, refill, period_us) each, with their script arguments
    encoded once (encoding arguments per request is a visible share of the limiter's cost)."""

    __slots__ = ("limits", "script_args")

    def __init__(self, limits: Sequence[tuple[int, int, int]]) -> None:
        self.limits = tuple(limits)
        values = [len(self.limits), *(value for limit in self.limits for value in limit)]
        self.script_args = tuple(str(value).encode() for value in values)


@dataclass(frozen=True, slots=True)
class DecisionRequest:
    """The buckets one request draws from: their keys, in the order of `specs.limits`."""

    keys: tuple[str, ...]
    specs: BucketSpecs

    @property
    def cache_key(self) -> str:
        """The key of these buckets together (the denial cache's key)."""
        return "\x00".join(self.keys)


class DenialCache:
    """Remembers Redis refusals until their retry time, so refused clients cost no round trip.

    It only ever refuses (never admits) until the moment Redis said a token would exist, so it
    cannot admit more than Redis would.
    """

    def __init__(self, max_keys: int) -> None:
        self._until: dict[str, int] = {}
        self._max_keys = max_keys

    def check(self, cache_key: str, now_us: int) -> Decision | None:
        """A refusal while `cache_key` is still denied, else None."""
        until = self._until.get(cache_key)
        if until is None:
            return None
        if until <= now_us:
            del self._until[cache_key]
            return None
        wait = until - now_us
        return Decision(allowed=False, remaining=0, retry_after_us=wait, reset_us=wait)

    def remember(self, cache_key: str, now_us: int, decision: Decision) -> None:
        """Record a refusal from Redis."""
        if len(self._until) >= self._max_keys:
            self._until = {k: v for k, v in self._until.items() if v > now_us}
            if len(self._until) >= self._max_keys:
                self._until.clear()
        self._until[cache_key] = now_us + decision.retry_after_us


class RedisBuckets:
    """Runs decisions in Redis; decisions made in one event-loop turn share one EVALSHA.

    `decide` returns None when Redis failed (the caller falls back to local buckets). On Cluster a
    script may only touch one slot, so a turn's decisions are grouped by slot (every decision's
    keys share a {hash tag}). At most `max_in_flight` calls run at once, below the connection pool
    size, so a burst of requests never exhausts the pool.
    """

    def __init__(self, service: RedisService, batch_max: int, max_in_flight: int) -> None:
        self.service = service
        self._script = service.script(TOKEN_BUCKET_LUA)
        self._cluster = isinstance(service.client, redis.asyncio.RedisCluster)
        self._batch_max = batch_max
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._pending: list[tuple[DecisionRequest, asyncio.Future[Decision | None]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def decide(self, request: DecisionRequest) -> Decision | None:
        """The Redis decision for `request`, or None when Redis is unavailable."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Decision | None] = loop.create_future()
        self._pending.append((request, future))
        if len(self._pending) == 1:
            # Flush after the loop has run every callback that is ready now: concurrent
            # requests join this batch instead of each paying a round trip.
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        groups: dict[int, list[tuple[DecisionRequest, asyncio.Future[Decision | None]]]] = {}
        if self._cluster:
            for item in pending:
                groups.setdefault(key_slot(item[0].keys[0].encode()), []).append(item)
        else:
            groups[0] = pending
        loop = asyncio.get_running_loop()
        for group in groups.values():
            for start in range(0, len(group), self._batch_max):
                task = loop.create_task(self._run_batch(group[start : start + self._batch_max]))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _run_batch(
        self, batch: list[tuple[DecisionRequest, asyncio.Future[Decision | None]]]
    ) -> None:
        async with self._in_flight:
            results = await self._run([request for request, _ in batch])
        for index, (_, future) in enumerate(batch):
            if not future.done():  # the waiting request may have been cancelled
                future.set_result(None if results is None else results[index])

    async def _run(self, requests: Sequence[DecisionRequest]) -> list[Decision] | None:
        keys: list[str] = []
        layout_numbers: dict[int, bytes] = {}
        layouts: list[bytes] = []
        numbers: list[bytes] = []
        for request in requests:
            keys.extend(request.keys)
            number = layout_numbers.get(id(request.specs))
            if number is None:
                number = layout_numbers[id(request.specs)] = str(len(layout_numbers) + 1).encode()
                layouts.extend(request.specs.script_args)
            numbers.append(number)
        args = [str(len(requests)).encode(), str(len(layout_numbers)).encode(), *layouts, *numbers]
        try:
            reply = await self._script(keys=keys, args=args)
        except redis.RedisError as exc:
            self.service.mark_failure(exc)
            return None
        self.service.mark_success()
        return [
            Decision(
                allowed=reply[i] == 1,
                remaining=int(reply[i + 1]),
                retry_after_us=int(reply[i + 2]),
                reset_us=int(reply[i + 3]),
            )
            for i in range(0, len(reply), 4)
        ]


def ceil_seconds(microseconds: int) -> int:
    """Whole seconds, rounded up (headers and Retry-After)."""
    return math.ceil(microseconds / 1_000_000)
