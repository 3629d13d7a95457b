"""A clock the overload tests move by hand, and the limit's parameters with test defaults."""

from typing import Any

from app.services.overload.limit import AdaptiveLimit, LimitParameters


class FakeClock:
    """Monotonic seconds that only move when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def limit_parameters(**overrides: Any) -> LimitParameters:
    """Parameters for the tests: floor 4, start 20, ceiling 100, a 1 ms latency allowance,
    windows of 1 s and 5 samples, no smoothing (each window's estimate is taken whole), so the
    arithmetic in the tests is the algorithm's."""
    values: dict[str, Any] = {
        "min_limit": 4,
        "max_limit": 100,
        "initial_limit": 20,
        "tolerance": 2.0,
        "allowance_seconds": 0.001,
        "smoothing": 1.0,
        "window_seconds": 1.0,
        "window_min_samples": 5,
        "baseline_rise_seconds": 120.0,
        "lag_threshold_seconds": 0.05,
        "db_waiters_threshold": 4.0,
    }
    values.update(overrides)
    return LimitParameters(**values)


def run_window(
    limit: AdaptiveLimit,
    clock: FakeClock,
    *,
    latency: float,
    in_flight: int,
    route: str = "/api/jobs",
    samples: int = 5,
) -> None:
    """Feed one window of identical samples and close it (the last sample arrives once the
    window's time is up); fails if the window did not close."""
    for _ in range(samples - 1):
        assert not limit.sample(route, latency, in_flight)
    clock.advance(limit.params.window_seconds)
    assert limit.sample(route, latency, in_flight)


def learn_baseline(
    limit: AdaptiveLimit, clock: FakeClock, latency: float, route: str = "/api/jobs"
) -> None:
    """Give `route` a baseline of `latency`: windows with 1 request in flight, whose latency
    says nothing about the limit (it constrained nothing). They let the limit drift towards
    twice that peak, so it is put back: the tests start from the initial limit."""
    before = limit.limit
    for _ in range(3):
        run_window(limit, clock, latency=latency, in_flight=1, route=route)
    assert limit.limit <= before
    limit.limit = before
