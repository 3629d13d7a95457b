"""Waiting on conditions, the suite's one way to do it: poll until true, fail at a deadline.

Deadlines are the time the awaited thing may legitimately take (a recovery timeout, a retry
delay, a process start) plus a margin for a loaded 2-core machine; never a guess at how fast it
usually is. The failure names what was awaited.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

# Added to every deadline: a busy CI machine can stall a process for seconds.
LOADED_MACHINE_MARGIN = 10.0


async def wait_until(
    condition: Callable[[], Awaitable[T]],
    *,
    within: float,
    what: str = "the condition",
    interval: float = 0.02,
) -> T:
    """Await `condition()` until it returns something truthy, and return that.

    Fails (AssertionError) after `within` seconds plus LOADED_MACHINE_MARGIN.
    """
    deadline = time.monotonic() + within + LOADED_MACHINE_MARGIN
    while True:
        result = await condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(interval)


def wait_until_sync(
    condition: Callable[[], T],
    *,
    within: float,
    what: str = "the condition",
    interval: float = 0.05,
) -> T:
    """`wait_until` for synchronous code (subprocess tests): polls with time.sleep."""
    deadline = time.monotonic() + within + LOADED_MACHINE_MARGIN
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


async def wait_for_progress(
    measure: Callable[[], Awaitable[int]],
    *,
    target: int,
    stall_after: float,
    what: str = "the work",
    interval: float = 0.5,
) -> None:
    """Await until `measure()` reaches `target`, however long steady progress takes.

    For bulk work whose total time depends on the machine's load: it fails only when the value
    stops moving for `stall_after` seconds (plus LOADED_MACHINE_MARGIN).
    """
    last = await measure()
    moved_at = time.monotonic()
    while last < target:
        await asyncio.sleep(interval)
        current = await measure()
        if current != last:
            last, moved_at = current, time.monotonic()
        elif time.monotonic() - moved_at > stall_after + LOADED_MACHINE_MARGIN:
            raise AssertionError(f"{what} stalled at {last} of {target}")
