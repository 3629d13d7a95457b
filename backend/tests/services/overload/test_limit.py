"""The adaptive concurrency limit, driven sample by sample with a hand-moved clock."""

import math

import pytest

from app.services.overload.limit import AdaptiveLimit, LimitParameters
from app.services.overload.signals import LoadSignals
from tests.services.overload.helpers import (
    FakeClock,
    learn_baseline,
    limit_parameters,
    run_window,
)

BASE = 0.010  # a route's no-load latency: 10 ms


def make_limit(**overrides: float) -> tuple[AdaptiveLimit, FakeClock, LoadSignals]:
    clock = FakeClock()
    signals = LoadSignals()
    return AdaptiveLimit(limit_parameters(**overrides), signals, clock), clock, signals


def test_latency_at_the_baseline_under_load_grows_the_limit_by_its_square_root() -> None:
    limit, clock, _ = make_limit()
    learn_baseline(limit, clock, BASE)
    run_window(limit, clock, latency=BASE, in_flight=15)
    assert limit.gradient == 1.0
    assert limit.limit == pytest.approx(20 + math.sqrt(20))


def test_inflated_latency_under_load_shrinks_the_limit_in_proportion() -> None:
    limit, clock, _ = make_limit()
    learn_baseline(limit, clock, BASE)
    run_window(limit, clock, latency=4 * BASE, in_flight=20)
    # Ratio (40 + 1) / (10 + 1) ms; the limit is cut to tolerance / ratio of itself.
    ratio = (4 * BASE + 0.001) / (BASE + 0.001)
    assert limit.gradient == pytest.approx(2.0 / ratio)
    assert limit.limit == pytest.approx(20 * 2.0 / ratio)


def test_latency_within_the_tolerance_is_not_congestion() -> None:
    limit, clock, _ = make_limit()
    learn_baseline(limit, clock, BASE)
    run_window(limit, clock, latency=1.9 * BASE, in_flight=20)
    assert limit.gradient == 1.0
    assert limit.limit > 20


@pytest.mark.parametrize(("allowance", "congested"), [(0.001, True), (0.020, False)])
def test_interleaving_within_the_allowance_is_not_congestion(
    allowance: float, congested: bool
) -> None:
    """A CPU-bound worker: a 3 ms route takes 12 ms while requests interleave. Against the
    bare baseline that is 4x; with a 20 ms allowance it is (12 + 20) / (3 + 20) = 1.4x."""
    limit, clock, _ = make_limit(allowance_seconds=allowance)
    learn_baseline(limit, clock, 0.003)
    run_window(limit, clock, latency=0.012, in_flight=12)
    ratio = (0.012 + allowance) / (0.003 + allowance)
    if congested:
        assert limit.gradient == pytest.approx(2.0 / ratio)
        assert limit.limit < 20
    else:
        assert limit.gradient == 1.0
        assert limit.limit == pytest.approx(20 + math.sqrt(20))


def test_a_queue_beyond_the_allowance_is_congestion() -> None:
    """Latency past tolerance x baseline + (tolerance - 1) x allowance shrinks the limit."""
    limit, clock, _ = make_limit(allowance_seconds=0.020)
    learn_baseline(limit, clock, 0.003)
    run_window(limit, clock, latency=0.030, in_flight=20)  # 2 x 3 + 20 = 26 ms allowed
    assert limit.gradient == pytest.approx(2.0 / ((0.030 + 0.020) / (0.003 + 0.020)))
    assert limit.limit < 20


def test_one_window_at_most_halves_the_limit_and_the_floor_holds() -> None:
    limit, clock, _ = make_limit()
    learn_baseline(limit, clock, BASE)
    run_window(limit, clock, latency=100 * BASE, in_flight=20)
    assert limit.limit == 10
    for _ in range(5):
        run_window(limit, clock, latency=100 * BASE, in_flight=20)
    assert limit.limit == 4


def test_the_ceiling_holds() -> None:
    limit, clock, _ = make_limit(max_limit=22)
    learn_baseline(limit, clock, BASE)
    for _ in range(5):
        run_window(limit, clock, latency=BASE, in_flight=int(limit.limit))
    assert limit.limit == 22


def test_smoothing_takes_part_of_each_estimate() -> None:
    limit, clock, _ = make_limit(smoothing=0.25)
    learn_baseline(limit, clock, BASE)
    run_window(limit, clock, latency=100 * BASE, in_flight=20)
    # Target 10 (halved); a quarter of the way there.
    assert limit.limit == pytest.approx(20 - 0.25 * 10)


def test_a_window_that_used_less_than_half_the_limit_drifts_towards_twice_its_peak() -> None:
    """The limit constrained nothing there: slow answers (a neighbour hogging the CPU) must not
    shrink it in proportion, fast ones must not grow it past what was tried; it only drifts
    towards twice the concurrency really run, so a later surge starts from there."""
    limit, clock, _ = make_limit()
    learn_baseline(limit, clock, BASE)
    run_window(limit, clock, latency=100 * BASE, in_flight=9)
    assert limit.gradient == 0.5
    assert limit.limit == 18  # 2 x 9, not 20 x 0.5
    run_window(limit, clock, latency=BASE, in_flight=4)
    assert limit.limit == 8
    run_window(limit, clock, latency=BASE, in_flight=1)
    assert limit.limit == 4  # the floor


def test_a_mix_shifting_to_slow_routes_is_not_congestion() -> None:
    """Each route is measured against its own baseline: a surge of admin reports that take
    their usual 500 ms does not read as a process in trouble."""
    limit, clock, _ = make_limit()
    learn_baseline(limit, clock, BASE, route="/api/jobs")
    learn_baseline(limit, clock, 0.5, route="/api/admin/results")
    run_window(limit, clock, latency=0.5, in_flight=20, route="/api/admin/results")
    assert limit.gradient == 1.0
    assert limit.limit > 20


def test_queueing_shows_on_every_route() -> None:
    limit, clock, _ = make_limit()
    learn_baseline(limit, clock, BASE, route="/api/jobs")
    learn_baseline(limit, clock, 0.5, route="/api/admin/results")
    for _ in range(2):
        assert not limit.sample("/api/admin/results", 1.6, 20)
        assert not limit.sample("/api/jobs", 1.1, 20)
    clock.advance(1.0)
    assert limit.sample("/api/jobs", 1.1, 20)
    assert limit.limit < 20


def test_the_median_ratio_ignores_a_few_outliers() -> None:
    limit, clock, _ = make_limit()
    learn_baseline(limit, clock, BASE)
    for latency in (BASE, BASE, BASE, 50 * BASE):
        assert not limit.sample("/api/jobs", latency, 20)
    clock.advance(1.0)
    assert limit.sample("/api/jobs", BASE, 20)
    assert limit.gradient == 1.0


def test_event_loop_lag_counts_as_congestion() -> None:
    limit, clock, signals = make_limit()
    learn_baseline(limit, clock, BASE)
    signals.take()
    signals.record(0.08, 0)
    signals.record(0.12, 0)
    run_window(limit, clock, latency=BASE, in_flight=20)
    # Mean lag 100 ms against a 50 ms threshold.
    assert limit.gradient == pytest.approx(0.5)
    assert limit.limit == pytest.approx(10)


def test_database_pool_waiters_count_as_congestion() -> None:
    limit, clock, signals = make_limit()
    learn_baseline(limit, clock, BASE)
    signals.take()
    signals.record(0.0, 5)
    run_window(limit, clock, latency=BASE, in_flight=20)
    assert limit.gradient == pytest.approx(4 / 5)
    assert limit.limit == pytest.approx(16)


def test_signals_below_their_thresholds_do_not() -> None:
    limit, clock, signals = make_limit()
    learn_baseline(limit, clock, BASE)
    signals.record(0.04, 4)
    run_window(limit, clock, latency=BASE, in_flight=20)
    assert limit.gradient == 1.0


def test_a_window_needs_both_its_time_and_its_samples() -> None:
    limit, clock, _ = make_limit()
    for _ in range(10):
        assert not limit.sample("/api/jobs", BASE, 20)  # samples enough, time not up
    clock.advance(5.0)
    limit2, clock2, _ = make_limit()
    clock2.advance(5.0)
    for _ in range(4):
        assert not limit2.sample("/api/jobs", BASE, 20)  # time up, samples short
    assert limit2.sample("/api/jobs", BASE, 20)
    assert limit.sample("/api/jobs", BASE, 20)


def test_a_route_baseline_follows_faster_answers_at_once_and_slower_ones_under_load_slowly() -> (
    None
):
    limit, clock, _ = make_limit()
    learn_baseline(limit, clock, BASE)
    learnt = limit.baseline("/api/jobs")
    assert learnt == pytest.approx(BASE)
    # One slower answer, even an hour after the last, moves the baseline a tenth at most.
    clock.advance(3600)
    limit.sample("/api/jobs", 11 * BASE, 20)
    assert limit.baseline("/api/jobs") == pytest.approx(BASE + 0.1 * 10 * BASE)
    # A faster one, loaded or not, a tenth of the way down at once.
    limit.sample("/api/jobs", 0.0, 20)
    assert limit.baseline("/api/jobs") == pytest.approx(0.9 * 2 * BASE)


@pytest.mark.parametrize("per_second", [1, 10])
def test_under_sustained_load_the_baseline_rises_with_time_not_with_traffic(
    per_second: int,
) -> None:
    """A minute of answers at 3x the baseline moves it by 1 - e^(-60/120) of the gap (about
    39%), whether ten or six hundred answers arrived: the surge is not learnt as normal."""
    limit, clock, _ = make_limit()
    for _ in range(20):
        limit.sample("/api/jobs", BASE, 1)
    for _ in range(60 * per_second):
        clock.advance(1 / per_second)
        limit.sample("/api/jobs", 3 * BASE, 20)
    moved = (limit.baseline("/api/jobs") or 0.0) - BASE
    assert moved / (2 * BASE) == pytest.approx(1 - math.exp(-0.5), abs=0.01)


def test_the_first_requests_of_a_burst_finishing_last_do_not_raise_the_baseline() -> None:
    """They started with the process idle and waited behind everything admitted after them."""
    limit, clock, _ = make_limit()
    learn_baseline(limit, clock, BASE)
    clock.advance(0.3)
    limit.sample("/api/jobs", 0.29, 1)
    limit.sample("/api/jobs", 0.29, 2)
    assert (limit.baseline("/api/jobs") or 0.0) < 1.2 * BASE


def test_expected_wait_is_the_place_in_line_times_mean_latency_over_the_limit() -> None:
    limit, clock, _ = make_limit()
    assert limit.expected_wait(10) == 0.0  # nothing known yet
    run_window(limit, clock, latency=0.1, in_flight=10)
    assert limit.expected_wait(10) == pytest.approx(10 * 0.1 / limit.limit)


@pytest.mark.parametrize(("low", "start", "high"), [(0, 1, 2), (5, 4, 10), (1, 11, 10)])
def test_contradicting_bounds_are_refused(low: int, start: int, high: int) -> None:
    with pytest.raises(ValueError, match="OVERLOAD_MIN_LIMIT"):
        LimitParameters(
            min_limit=low,
            initial_limit=start,
            max_limit=high,
            tolerance=2.0,
            allowance_seconds=0.02,
            smoothing=0.2,
            window_seconds=0.2,
            window_min_samples=10,
            baseline_rise_seconds=120.0,
            lag_threshold_seconds=0.05,
            db_waiters_threshold=4.0,
        )
