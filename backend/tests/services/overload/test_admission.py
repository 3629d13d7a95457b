"""Admission by priority: capacities, the queues' order, shedding at once or on timeout, and
slots given back whatever happens to the request. The clock only moves by hand; the event loop
runs the waiting requests, with no sleeps."""

import asyncio
from typing import Any

import pytest
from prometheus_client import REGISTRY

from app.config.priorities import DEFAULT_QUEUES, Priority, PriorityQueue
from app.services.overload.admission import Admission, Slot
from app.services.overload.limit import AdaptiveLimit
from app.services.overload.signals import LoadSignals
from tests.services.overload.helpers import FakeClock, limit_parameters

PATIENT = PriorityQueue(size=10, timeout_seconds=60.0)


def make_admission(
    limit: int = 4,
    queues: dict[Priority, PriorityQueue] | None = None,
    max_limit: int = 100,
    **options: Any,
) -> tuple[Admission, FakeClock]:
    clock = FakeClock()
    adaptive = AdaptiveLimit(
        limit_parameters(min_limit=1, initial_limit=limit, max_limit=max_limit),
        LoadSignals(),
        clock,
    )
    values: dict[str, Any] = {"background_share": 0.5, "critical_headroom": 0.5}
    values.update(options)
    admission = Admission(
        adaptive,
        queues or {"critical": PATIENT, "normal": PATIENT, "background": PATIENT},
        clock=clock,
        **values,
    )
    return admission, clock


def fill(admission: Admission, priority: Priority, count: int) -> list[Slot]:
    slots = [admission.try_acquire(priority) for _ in range(count)]
    assert all(slots), "the slots should have been free"
    return [slot for slot in slots if slot is not None]


async def queued(admission: Admission, priority: Priority) -> "asyncio.Task[Slot | str]":
    """A request of `priority` that had to wait: its task, once it sits in the queue."""
    before = admission.queued(priority)
    task = asyncio.create_task(admission.acquire(priority))
    for _ in range(100):
        if admission.queued(priority) > before or task.done():
            break
        await asyncio.sleep(0)
    assert not task.done(), "the request should have been queued"
    assert admission.queued(priority) == before + 1
    return task


async def admitted(task: "asyncio.Task[Slot | str]") -> Slot:
    """The slot a queued request got; fails if it is still waiting (no slot was handed over).
    A handed-over slot wakes its task within a few turns of the loop."""
    for _ in range(100):
        if task.done():
            break
        await asyncio.sleep(0)
    assert task.done(), "the request should have been admitted"
    slot = await task
    assert isinstance(slot, Slot)
    return slot


def sample_value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_capacities_follow_the_limit_by_priority() -> None:
    admission, _ = make_admission(limit=10, background_share=0.75, critical_headroom=0.5)
    assert admission.capacity("background") == 7
    assert admission.capacity("normal") == 10
    assert admission.capacity("critical") == 15


def test_critical_gets_at_least_one_above_the_limit_and_background_at_least_one() -> None:
    admission, _ = make_admission(limit=1, background_share=0.1, critical_headroom=0.0)
    assert admission.capacity("background") == 1
    assert admission.capacity("critical") == 2


def test_background_stops_at_its_share_normal_at_the_limit_critical_above_it() -> None:
    admission, _ = make_admission(limit=4)
    fill(admission, "background", 2)
    assert admission.try_acquire("background") is None
    fill(admission, "normal", 2)
    assert admission.try_acquire("normal") is None
    fill(admission, "critical", 2)
    assert admission.try_acquire("critical") is None
    assert admission.in_flight == 6


async def test_a_freed_slot_goes_to_the_most_important_waiter() -> None:
    admission, _ = make_admission(limit=4)
    slots = fill(admission, "critical", 6)
    background = await queued(admission, "background")
    normal = await queued(admission, "normal")
    first_critical = await queued(admission, "critical")
    second_critical = await queued(admission, "critical")

    admission.release(slots.pop(), "/x")
    slots.append(await admitted(first_critical))
    admission.release(slots.pop(), "/x")
    slots.append(await admitted(second_critical))
    # 6 running: normal needs fewer than 4, background fewer than 2.
    for _ in range(3):
        admission.release(slots.pop(), "/x")
    slots.append(await admitted(normal))
    admission.release(slots.pop(), "/x")
    admission.release(slots.pop(), "/x")
    assert admission.in_flight == 2
    assert admission.queued("background") == 1
    admission.release(slots.pop(), "/x")
    await admitted(background)
    assert admission.in_flight == 2


async def test_a_newcomer_does_not_overtake_its_own_queue() -> None:
    admission, _ = make_admission(limit=2)
    slots = fill(admission, "normal", 2)
    waiting = await queued(admission, "normal")
    admission.release(slots[0], "/x")
    # The freed slot went to the waiter, not to whoever asks next.
    assert admission.try_acquire("normal") is None
    await admitted(waiting)


async def test_full_queue_sheds_at_once() -> None:
    queue = PriorityQueue(size=1, timeout_seconds=60.0, retry_after_seconds=3)
    admission, _ = make_admission(
        limit=2, queues={"critical": PATIENT, "normal": PATIENT, "background": queue}
    )
    fill(admission, "normal", 2)
    await queued(admission, "background")
    before = sample_value(
        "hiringpro_overload_shed_total", priority="background", reason="queue_full"
    )
    assert await admission.acquire("background") == "queue_full"
    after = sample_value(
        "hiringpro_overload_shed_total", priority="background", reason="queue_full"
    )
    assert after == before + 1


async def test_no_queue_sheds_at_once() -> None:
    admission, _ = make_admission(
        limit=2,
        queues={
            "critical": PATIENT,
            "normal": PATIENT,
            "background": PriorityQueue(size=0, timeout_seconds=1.0),
        },
    )
    fill(admission, "normal", 2)
    assert await admission.acquire("background") == "at_limit"


async def test_a_wait_longer_than_the_timeout_is_not_started() -> None:
    """With a slot freeing every mean latency / limit seconds, the first in line of a process at
    limit 2 whose requests take 1 s waits about 0.5 s: within half its 1 s timeout, so it waits;
    with one more waiter ahead, 1 s is past half the timeout, so shed at once."""
    short = PriorityQueue(size=10, timeout_seconds=1.0)
    admission, clock = make_admission(
        limit=2, max_limit=2, queues={"critical": PATIENT, "normal": short, "background": short}
    )
    # Teach the limit a mean latency of 1 s (one window of samples).
    for _ in range(5):
        slot = admission.try_acquire("normal")
        assert slot is not None
        clock.advance(1.0)
        admission.release(slot, "/x")
    assert admission.limit.mean_latency == pytest.approx(1.0)
    fill(admission, "normal", 2)
    first = await queued(admission, "normal")  # 1st in line: 0.5 s
    # Waiters of a more important priority are ahead too: 1.0 s for background's first.
    assert await admission.acquire("background") == "wait_too_long"
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)


async def test_a_line_holds_half_of_what_its_priority_got_in_a_timeout() -> None:
    """Behind the first in line, a newcomer is judged by how fast its priority got slots: with 6
    normal requests admitted during the last second, a normal line holds 3 (each expects a slot
    within half the 1 s timeout); with none admitted during the last second, only one waits."""
    short = PriorityQueue(size=10, timeout_seconds=1.0)
    admission, clock = make_admission(
        limit=6, queues={"critical": PATIENT, "normal": short, "background": short}
    )
    fill(admission, "normal", 6)
    waiting = [await queued(admission, "normal") for _ in range(3)]
    assert await admission.acquire("normal") == "wait_too_long"
    # A second later those admissions are history: only the first in line may wait.
    clock.advance(1.1)
    admission.release(fill(admission, "critical", 1)[0], None)  # something still finishes
    assert await admission.acquire("normal") == "wait_too_long"
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    assert admission.queued("normal") == 0


async def test_a_waiter_whose_timeout_passes_runs_outside_the_limit() -> None:
    """Joining a queue is a promise: a request that waited is never shed for it, and running
    late it takes nobody's slot (a test-taker arriving next is admitted at once)."""
    quick = PriorityQueue(size=10, timeout_seconds=0.01)
    admission, _ = make_admission(
        limit=2, queues={"critical": PATIENT, "normal": quick, "background": quick}
    )
    fill(admission, "normal", 2)
    before = sample_value("hiringpro_overload_overdue_total", priority="normal")
    running = sample_value("hiringpro_overload_in_flight", priority="normal")
    overdue = await admission.acquire("normal")
    assert isinstance(overdue, Slot)
    assert admission.queued("normal") == 0
    assert sample_value("hiringpro_overload_overdue_total", priority="normal") == before + 1
    assert sample_value("hiringpro_overload_in_flight", priority="normal") == running + 1
    assert admission.in_flight == 2
    assert admission.try_acquire("critical") is not None
    admission.release(overdue, "/x")
    assert admission.in_flight == 3
    assert sample_value("hiringpro_overload_in_flight", priority="normal") == running


async def test_no_request_finishing_for_a_timeout_sheds_newcomers_at_once() -> None:
    """Nothing has finished for longer than the queue's timeout: no slot would free up in time
    (a stuck dependency), so newcomers are not queued behind it."""
    short = PriorityQueue(size=10, timeout_seconds=1.0)
    admission, clock = make_admission(
        limit=2, queues={"critical": PATIENT, "normal": short, "background": short}
    )
    # Idle for longer than the timeout: the first requests of a burst start the clock afresh.
    clock.advance(5.0)
    slots = fill(admission, "normal", 2)
    burst = await queued(admission, "normal")
    burst.cancel()
    await asyncio.gather(burst, return_exceptions=True)
    clock.advance(1.5)
    assert await admission.acquire("normal") == "wait_too_long"
    admission.release(slots[0], "/x")
    fill(admission, "normal", 1)
    waiting = await queued(admission, "normal")  # a request just finished: worth a wait
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    admission, _ = make_admission(limit=1)
    slots = fill(admission, "normal", 1)
    waiting = await queued(admission, "normal")
    queued_before = sample_value("hiringpro_overload_queued", priority="normal")
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert admission.queued("normal") == 0
    assert sample_value("hiringpro_overload_queued", priority="normal") == queued_before - 1
    admission.release(slots[0], "/x")
    assert admission.in_flight == 0


async def test_a_waiter_cancelled_as_its_slot_arrives_gives_the_slot_back() -> None:
    admission, _ = make_admission(limit=1)
    slots = fill(admission, "normal", 1)
    waiting = await queued(admission, "normal")
    # The slot is handed over, and before the task runs again it is cancelled.
    admission.release(slots[0], "/x")
    assert admission.in_flight == 1
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert admission.in_flight == 0


def test_release_without_a_route_is_not_a_sample() -> None:
    admission, clock = make_admission(limit=4)
    for _ in range(5):
        slot = admission.try_acquire("normal")
        assert slot is not None
        clock.advance(1.0)
        admission.release(slot, None)
    assert admission.limit.mean_latency == 0.0
    assert admission.limit.baseline("/x") is None
    assert admission.in_flight == 0


def test_in_flight_gauges_count_by_priority() -> None:
    admission, _ = make_admission(limit=4)
    before = sample_value("hiringpro_overload_in_flight", priority="critical")
    slots = fill(admission, "critical", 2)
    assert sample_value("hiringpro_overload_in_flight", priority="critical") == before + 2
    for slot in slots:
        admission.release(slot, "/x")
    assert sample_value("hiringpro_overload_in_flight", priority="critical") == before


def test_every_priority_needs_a_queue() -> None:
    clock = FakeClock()
    adaptive = AdaptiveLimit(limit_parameters(), LoadSignals(), clock)
    queues = {name: DEFAULT_QUEUES[name] for name in ("critical", "normal")}
    with pytest.raises(ValueError, match="background"):
        Admission(adaptive, queues, background_share=0.5, critical_headroom=0.5)  # type: ignore[arg-type]
