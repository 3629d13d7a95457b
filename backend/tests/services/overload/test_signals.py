"""Load signals: the averages the limit reads, and the monitor that measures loop lag."""

import asyncio
import logging
import time

import pytest

from app.services.overload.signals import LoadMonitor, LoadSignals
from tests.support.wait import wait_until


def test_take_returns_the_means_since_the_last_take() -> None:
    signals = LoadSignals()
    assert signals.take() == (0.0, 0.0)
    signals.record(0.1, 2)
    signals.record(0.3, 6)
    assert signals.take() == pytest.approx((0.2, 4.0))
    assert signals.take() == (0.0, 0.0)


async def test_a_blocked_loop_shows_as_lag_and_waiters_are_sampled() -> None:
    signals = LoadSignals()
    monitor = LoadMonitor(signals, 0.02, lambda: 3)
    monitor.ensure_running()
    lags: list[float] = []
    waiters: list[float] = []

    async def sampled() -> bool:
        lag, waiting = signals.take()
        lags.append(lag)
        waiters.append(waiting)
        return waiting > 0

    try:
        await wait_until(sampled, within=1, what="the monitor's first sample")
        lags.clear()
        # Nothing else can run meanwhile, the monitor's wake-up included: it is at least this
        # late (the sleep cannot end early).
        time.sleep(0.3)  # noqa: ASYNC251 (blocking the loop is the point)
        await wait_until(sampled, within=1, what="the monitor's sample after the block")
    finally:
        monitor.stop()
    assert max(lags) >= 0.3 - 0.02
    assert set(waiters) <= {0.0, 3.0}


def monitor_tasks() -> list["asyncio.Task[object]"]:
    return [task for task in asyncio.all_tasks() if task.get_name() == "load-monitor"]


async def test_the_monitor_runs_once_per_loop_and_stops() -> None:
    monitor = LoadMonitor(LoadSignals(), 0.02, lambda: 0)
    monitor.ensure_running()
    monitor.ensure_running()
    [task] = monitor_tasks()
    monitor.stop()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert monitor_tasks() == []


async def test_a_failing_waiters_probe_is_logged_once_and_the_monitor_keeps_going(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    def broken() -> int:
        nonlocal calls
        calls += 1
        raise RuntimeError("probe bug")

    signals = LoadSignals()
    monitor = LoadMonitor(signals, 0.01, broken)

    async def probed_three_times() -> bool:
        return calls >= 3

    with caplog.at_level(logging.ERROR, logger="app.services.overload.signals"):
        monitor.ensure_running()
        try:
            await wait_until(probed_three_times, within=1, what="three samples")
        finally:
            monitor.stop()
    failures = [r for r in caplog.records if "pool waiters probe failed" in r.getMessage()]
    assert len(failures) == 1
