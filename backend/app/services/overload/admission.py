"""Admission by priority against the adaptive limit: run now, wait briefly, or be shed.

Each priority may fill the process up to its own capacity, from the limit L:

* background: ``OVERLOAD_BACKGROUND_SHARE x L`` (at least 1), so background work alone never
  takes the slots that candidates' requests will want;
* normal: L;
* critical: ``L + OVERLOAD_CRITICAL_HEADROOM x L`` (at least one above L): test-takers keep
  being admitted while everyone else waits or is shed, and only when even that headroom is full
  (the process would otherwise fail them all) do they queue.

A request over its capacity waits in its priority's queue, FIFO; a freed slot goes to the most
important waiter that fits. It is shed at once (503 within the same event-loop turn) when its
queue is full or disabled, when its expected wait (its place in line x mean latency / L)
exceeds its queue's timeout, or when the oldest request of its queue has already waited half
that timeout (CoDel's idea: a standing queue means arrivals outpace the slots, and a newcomer
would most likely wait in vain); otherwise it is shed when the timeout passes. Shedding order thus
follows the capacities: background first, then normal, critical last.
"""

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from app.config.priorities import PRIORITIES, Priority, PriorityQueue
from app.observability.metrics import (
    OVERLOAD_IN_FLIGHT,
    OVERLOAD_LIMIT,
    OVERLOAD_QUEUED,
    OVERLOAD_SHED,
)
from app.services.overload.limit import AdaptiveLimit

# Why a request was shed (the `reason` label of hiringpro_overload_shed_total):
# at_limit: over its capacity, and its priority has no queue;
# queue_full: its queue held OVERLOAD_QUEUES' size already;
# wait_too_long: its expected wait exceeded its queue's timeout, so it did not wait at all;
# queue_timeout: it waited for the whole timeout without a slot freeing up for it.
ShedReason = Literal["at_limit", "queue_full", "wait_too_long", "queue_timeout"]
# wait_too_long also when the queue's oldest waiter has waited this share of its timeout.
_STANDING_QUEUE_SHARE = 0.5


@dataclass(slots=True)
class Slot:
    """An admitted request's place: give it back with `Admission.release`."""

    priority: Priority
    started: float
    # Requests running when it was admitted, itself included.
    in_flight: int


class Admission:
    """In-flight requests and queues of one process, against an `AdaptiveLimit`."""

    def __init__(
        self,
        limit: AdaptiveLimit,
        queues: Mapping[Priority, PriorityQueue],
        *,
        background_share: float,
        critical_headroom: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        missing = [priority for priority in PRIORITIES if priority not in queues]
        if missing:
            raise ValueError(f"OVERLOAD_QUEUES has no entry for: {', '.join(missing)}")
        self._limit = limit
        self._queues = dict(queues)
        self._background_share = background_share
        self._critical_headroom = critical_headroom
        self._clock = clock
        self.in_flight = 0
        self._waiting: dict[Priority, deque[asyncio.Future[Slot]]] = {
            priority: deque() for priority in PRIORITIES
        }
        # When each waiter joined its line (the age of a line is its head's).
        self._queued_at: dict[asyncio.Future[Slot], float] = {}
        self._in_flight_gauges = {p: OVERLOAD_IN_FLIGHT.labels(p) for p in PRIORITIES}
        self._queued_gauges = {p: OVERLOAD_QUEUED.labels(p) for p in PRIORITIES}
        self._shed_counters = {
            (p, reason): OVERLOAD_SHED.labels(p, reason)
            for p in PRIORITIES
            for reason in ("at_limit", "queue_full", "wait_too_long", "queue_timeout")
        }
        OVERLOAD_LIMIT.set(int(limit.limit))

    @property
    def limit(self) -> AdaptiveLimit:
        """The limit this admission works against."""
        return self._limit

    def capacity(self, priority: Priority) -> int:
        """How many requests may run at once when the newest one has `priority`."""
        limit = int(self._limit.limit)
        if priority == "critical":
            return limit + max(1, math.ceil(limit * self._critical_headroom))
        if priority == "background":
            return max(1, int(limit * self._background_share))
        return limit

    def queued(self, priority: Priority) -> int:
        """Requests of `priority` waiting for a slot."""
        return len(self._waiting[priority])

    def try_acquire(self, priority: Priority) -> Slot | None:
        """A slot at once, or None (over capacity, or others of this priority are waiting)."""
        if self._waiting[priority] or self.in_flight >= self.capacity(priority):
            return None
        return self._take(priority)

    async def acquire(self, priority: Priority) -> Slot | ShedReason:
        """A slot, possibly after a bounded wait; or why the request is shed.

        Shed at once when waiting is pointless (see the module docstring), so a shed answer
        never waits for a timeout it could not beat.
        """
        slot = self.try_acquire(priority)
        if slot is not None:
            return slot
        reason = self._refuse_at_once(priority)
        if reason is not None:
            return self._shed(priority, reason)
        waiter: asyncio.Future[Slot] = asyncio.get_running_loop().create_future()
        line = self._waiting[priority]
        line.append(waiter)
        self._queued_at[waiter] = self._clock()
        self._queued_gauges[priority].inc()
        try:
            async with asyncio.timeout(self._queues[priority].timeout_seconds):
                return await waiter
        except TimeoutError:
            if _admitted(waiter):
                return waiter.result()  # a slot came as the timeout fired
            self._leave_line(line, waiter, priority)
            return self._shed(priority, "queue_timeout")
        except asyncio.CancelledError:
            if _admitted(waiter):
                # The slot was handed over as the request was cancelled: give it back.
                self.release(waiter.result(), None)
            else:
                self._leave_line(line, waiter, priority)
            raise

    def release(self, slot: Slot, route: str | None) -> None:
        """Give back `slot`; with `route` (the request finished), its latency is a sample."""
        self.in_flight -= 1
        self._in_flight_gauges[slot.priority].dec()
        if route is not None:
            latency = self._clock() - slot.started
            if self._limit.sample(route, latency, slot.in_flight):
                OVERLOAD_LIMIT.set(int(self._limit.limit))
        self._admit_waiting()

    def _take(self, priority: Priority) -> Slot:
        self.in_flight += 1
        self._in_flight_gauges[priority].inc()
        return Slot(priority, self._clock(), self.in_flight)

    def _refuse_at_once(self, priority: Priority) -> ShedReason | None:
        queue = self._queues[priority]
        if queue.size == 0 or queue.timeout_seconds == 0:
            return "at_limit"
        line = self._waiting[priority]
        if len(line) >= queue.size:
            return "queue_full"
        if line:
            waited = self._clock() - self._queued_at.get(line[0], self._clock())
            if waited > _STANDING_QUEUE_SHARE * queue.timeout_seconds:
                return "wait_too_long"
        # Everyone at this priority or above is admitted first.
        ahead = 0
        for other in PRIORITIES:
            ahead += len(self._waiting[other])
            if other == priority:
                break
        if self._limit.expected_wait(ahead + 1) > queue.timeout_seconds:
            return "wait_too_long"
        return None

    def _admit_waiting(self) -> None:
        """Hand freed slots to waiters, most important first (capacities only fall with
        priority, so a priority that cannot be admitted stops nothing above it)."""
        for priority in PRIORITIES:
            line = self._waiting[priority]
            while line and self.in_flight < self.capacity(priority):
                waiter = line.popleft()
                self._queued_at.pop(waiter, None)
                self._queued_gauges[priority].dec()
                if waiter.done():
                    continue  # cancelled or timed out; its task removes nothing more
                waiter.set_result(self._take(priority))

    def _leave_line(
        self, line: deque[asyncio.Future[Slot]], waiter: asyncio.Future[Slot], priority: Priority
    ) -> None:
        self._queued_at.pop(waiter, None)
        try:
            line.remove(waiter)
        except ValueError:
            return  # already taken out by _admit_waiting
        self._queued_gauges[priority].dec()

    def _shed(self, priority: Priority, reason: ShedReason) -> ShedReason:
        self._shed_counters[(priority, reason)].inc()
        return reason


def _admitted(waiter: asyncio.Future[Slot]) -> bool:
    return waiter.done() and not waiter.cancelled()
