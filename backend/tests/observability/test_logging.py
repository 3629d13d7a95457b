"""The timing helper: one log line per operation, louder when slow or failed."""

import logging

import pytest

from app.observability.logging import PerformanceLogger


def test_performance_logger_times_and_flags_slow_operations(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="app.performance")
    with PerformanceLogger("fast_op", slow_ms=60_000, job="a") as fast:
        pass
    with PerformanceLogger("slow_op", slow_ms=0) as slow:
        pass
    with pytest.raises(ValueError), PerformanceLogger("failing_op", slow_ms=60_000):
        raise ValueError("boom")
    by_operation = {record.operation: record for record in caplog.records}  # type: ignore[attr-defined]
    assert by_operation["fast_op"].levelno == logging.DEBUG
    assert by_operation["fast_op"].job == "a"  # type: ignore[attr-defined]
    assert by_operation["fast_op"].duration_ms == round(fast.elapsed_ms, 2)  # type: ignore[attr-defined]
    assert by_operation["slow_op"].levelno == logging.WARNING
    assert by_operation["slow_op"].duration_ms == round(slow.elapsed_ms, 2)  # type: ignore[attr-defined]
    assert by_operation["failing_op"].outcome == "error"  # type: ignore[attr-defined]
    assert by_operation["failing_op"].levelno == logging.INFO


async def test_performance_logger_async_form(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="app.performance")
    async with PerformanceLogger("async_op") as timer:
        pass
    [record] = [r for r in caplog.records if getattr(r, "operation", None) == "async_op"]
    assert record.outcome == "ok"  # type: ignore[attr-defined]
    assert timer.elapsed_ms >= 0
