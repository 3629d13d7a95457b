"""Admission by priority against the adaptive limit: run now, wait briefly, or be shed.

Each priority may fill the process up to its own capacity, from the limit L:

* background: ``OVERLOAD_BACKGROUND_SHARE x L`` (at least 1), so background work alone never
  takes the slots that candidates' requests will want;
* normal: L;
* critical: ``L + OVERLOAD_CRITICAL_HEADROOM x L`` (at least one above L): test-takers keep
  being admitted while everyone else waits or is shed, and only when even that headroom is full
  (the process would otherwise fail them all) do they queue.

A request over its capacity either is shed at once (503 within the same event-loop turn) or
waits in its priority's queue, FIFO, for a freed slot, which goes to the most important waiter
that fits. It is shed at once when its queue is full or disabled, when no request has finished
for a whole timeout, or when its expected wait exceeds half its queue's timeout: judged from how
many requests of its priority were admitted during the last timeout (a line holds at most half
as many; more important requests overtaking it show in that count), or, for the first in line,
from the limit (place among all waiters ahead x mean latency / L). Shedding order thus follows
the capacities: background first, then normal, critical last.

Joining a queue is a promise: a waiter whose timeout passes runs anyway (``overdue``), so no
request is ever shed after waiting. An overdue request runs outside the limit, counted against
nobody's capacity, so it never delays a test-taker; the joining rules keep them few, and a
stuck process (nothing finishing) queues no newcomers at all.
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
    OVERLOAD_OVERDUE,
    OVERLOAD_QUEUED,
    OVERLOAD_SHED,
)
from app.services.overload.limit import AdaptiveLimit

# Why a request was shed (the `reason` label of hiringpro_overload_shed_total):
# at_limit: over its capacity, and its priority has no queue;
# queue_full: its queue held OVERLOAD_QUEUES' size already;
# wait_too_long: its expected wait exceeded half its queue's timeout, or nothing finished for a
# whole timeout, so it did not wait at all.
ShedReason = Literal["at_limit", "queue_full", "wait_too_long"]
# A newcomer joins a line only if it expects to be admitted within this share of the timeout;
# the rest of the timeout absorbs a slowdown after it joined.
_EXPECTED_WAIT_SHARE = 0.5


@dataclass(slots=True)
class Slot:
    """An admitted request's place: give it back with `Admission.release`."""

    priority: Priority
    started: float
    # Requests running when it was admitted, itself included.
    in_flight: int
    # False for an overdue request, which runs outside the limit.
    counted: bool = True


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
        # When requests of each priority were admitted, over its queue's last timeout.
        self._admitted_at: dict[Priority, deque[float]] = {p: deque() for p in PRIORITIES}
        # The last release, or when the process last went from idle to busy: how long the
        # requests running now have gone without any of them finishing.
        self._last_progress = clock()
        self._in_flight_gauges = {p: OVERLOAD_IN_FLIGHT.labels(p) for p in PRIORITIES}
        self._queued_gauges = {p: OVERLOAD_QUEUED.labels(p) for p in PRIORITIES}
        self._overdue_counters = {p: OVERLOAD_OVERDUE.labels(p) for p in PRIORITIES}
        self._shed_counters = {
            (p, reason): OVERLOAD_SHED.labels(p, reason)
            for p in PRIORITIES
            for reason in ("at_limit", "queue_full", "wait_too_long")
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

        Shed at once when waiting is pointless (see the module docstring); a request that
        waited always runs, outside the limit if its timeout passed.
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
        self._queued_gauges[priority].inc()
        try:
            async with asyncio.timeout(self._queues[priority].timeout_seconds):
                return await waiter
        except TimeoutError:
            if _admitted(waiter):
                return waiter.result()  # a slot came as the timeout fired
            self._leave_line(line, waiter, priority)
            self._overdue_counters[priority].inc()
            self._in_flight_gauges[priority].inc()
            return Slot(priority, self._clock(), self.in_flight + 1, counted=False)
        except asyncio.CancelledError:
            if _admitted(waiter):
                # The slot was handed over as the request was cancelled: give it back.
                self.release(waiter.result(), None)
            else:
                self._leave_line(line, waiter, priority)
            raise

    def release(self, slot: Slot, route: str | None) -> None:
        """Give back `slot`; with `route` (the request finished), its latency is a sample."""
        if slot.counted:
            self.in_flight -= 1
        self._in_flight_gauges[slot.priority].dec()
        self._last_progress = self._clock()
        if route is not None:
            latency = self._clock() - slot.started
            if self._limit.sample(route, latency, slot.in_flight):
                OVERLOAD_LIMIT.set(int(self._limit.limit))
        self._admit_waiting()

    def _take(self, priority: Priority) -> Slot:
        self.in_flight += 1
        self._in_flight_gauges[priority].inc()
        now = self._clock()
        if self.in_flight == 1:
            self._last_progress = now  # idle until now: nothing could have finished
        self._admitted_at[priority].append(now)
        self._admitted_within(priority, now)
        return Slot(priority, now, self.in_flight)

    def _admitted_within(self, priority: Priority, now: float) -> int:
        """Requests of `priority` admitted during its queue's last timeout (older ones go)."""
        admitted = self._admitted_at[priority]
        horizon = now - self._queues[priority].timeout_seconds
        while admitted and admitted[0] < horizon:
            admitted.popleft()
        return len(admitted)

    def _refuse_at_once(self, priority: Priority) -> ShedReason | None:
        queue = self._queues[priority]
        if queue.size == 0 or queue.timeout_seconds == 0:
            return "at_limit"
        line = self._waiting[priority]
        if len(line) >= queue.size:
            return "queue_full"
        now = self._clock()
        timeout = queue.timeout_seconds
        if now - self._last_progress > timeout:
            return "wait_too_long"  # nothing finishes: no slot would free up in time
        if line:
            # At the rate this priority got slots (len(admitted) per timeout), the newcomer
            # would be admitted within _EXPECTED_WAIT_SHARE x timeout.
            if len(line) + 1 > _EXPECTED_WAIT_SHARE * self._admitted_within(priority, now):
                return "wait_too_long"
            return None
        # First in line: everyone waiting at a more important priority is admitted first.
        ahead = 0
        for other in PRIORITIES:
            ahead += len(self._waiting[other])
            if other == priority:
                break
        if self._limit.expected_wait(ahead + 1) > _EXPECTED_WAIT_SHARE * timeout:
            return "wait_too_long"
        return None

    def _admit_waiting(self) -> None:
        """Hand freed slots to waiters, most important first (capacities only fall with
        priority, so a priority that cannot be admitted stops nothing above it)."""
        for priority in PRIORITIES:
            line = self._waiting[priority]
            while line and self.in_flight < self.capacity(priority):
                waiter = line.popleft()
                self._queued_gauges[priority].dec()
                if waiter.done():
                    continue  # cancelled or timed out; its task removes nothing more
                waiter.set_result(self._take(priority))

    def _leave_line(
        self, line: deque[asyncio.Future[Slot]], waiter: asyncio.Future[Slot], priority: Priority
    ) -> None:
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
