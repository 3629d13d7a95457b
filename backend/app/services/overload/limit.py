"""The adaptive concurrency limit: how many requests this process runs at once, learnt from latency.

A gradient limit in the manner of Netflix's concurrency-limits (Gradient2) and Envoy's adaptive
concurrency filter, with two changes for an API whose routes cost very different amounts:

* **Per-route no-load baselines.** Each route template has a baseline latency, the lower edge
  of its latencies: any faster answer pulls it down a tenth of the way at once, slower answers
  pull it up only with a time constant of OVERLOAD_BASELINE_RISE_SECONDS (whatever the traffic),
  so a surge is not mistaken for the route's new normal, while a route that became slower for
  good is relearnt. (An average over requests that started while the process was nearly idle
  was tried first: the requests that start first in a burst finish last, and two of them
  raised a 4 ms baseline to 58 ms.) A finished request's *ratio* is its latency over its
  route's baseline, both plus OVERLOAD_LATENCY_ALLOWANCE_MS, so a request is congested once it
  takes more than ``tolerance x baseline + (tolerance - 1) x allowance``. A shift of the mix
  towards slow routes (admin reports) therefore does not read as congestion; queueing does, on
  every route.
* **The allowance** keeps the limit honest in a CPU-bound worker, where k requests in flight
  each take about k times their CPU time: against a bare few-millisecond baseline, any
  concurrency above the tolerance read as congestion, and the limit sat at its floor with a
  quarter to a third of the cores idle (measured with a 1 ms allowance at 1,250 users: limit
  8-10 per worker, window median ratios 1.6-2.4 at 6 ms mean latency, admin requests shed
  while p95 was 19-46 ms). A few tens of milliseconds of interleaving are not what users feel;
  a queue is.
* **Windows.** Samples are gathered until a window has lasted OVERLOAD_WINDOW_SECONDS and holds
  OVERLOAD_WINDOW_MIN_SAMPLES. At its close the gradient is the least of three, each
  ``clamp(threshold / value, 0.5, 1)``: the median ratio against OVERLOAD_LATENCY_TOLERANCE, the
  mean event-loop lag against its threshold, the mean database pool waiters against theirs.

With gradient 1 the limit grows by sqrt(limit), probing for more; below 1 it shrinks to
limit x gradient (at most halving). A window whose peak concurrency stayed below half the limit
says nothing about the limit (it constrained nothing; a process slowed by a neighbour must not
shrink a limit it is not using), so its latency is ignored and the limit drifts down towards
twice that peak instead: after a calm spell a surge starts from about what the process really
ran, not from a limit nobody tested (from 64, the onset of a benchmark surge let ~2 s of
critical requests exceed 500 ms). Every move is smoothed (OVERLOAD_SMOOTHING) and the result
kept within [floor, ceiling].
"""

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from app.config import Settings
from app.services.overload.signals import LoadSignals

# Weight of one faster sample in its route's baseline (and the most one slower sample gets).
_BASELINE_ALPHA = 0.1
# Route templates are bounded by the app's routes; the cap only guards against a bug.
_MAX_ROUTES = 512
_OTHER_ROUTE = "<other>"
# A window shrinks the limit to at most half.
_MIN_GRADIENT = 0.5
# Weight of a window's mean latency in the smoothed one (used to estimate queue waits).
_LATENCY_ALPHA = 0.5


@dataclass(frozen=True, slots=True)
class LimitParameters:
    """The limit's bounds and how it moves (see the OVERLOAD_* settings)."""

    min_limit: int
    max_limit: int
    initial_limit: int
    tolerance: float
    allowance_seconds: float
    smoothing: float
    window_seconds: float
    window_min_samples: int
    baseline_rise_seconds: float
    lag_threshold_seconds: float
    db_waiters_threshold: float

    def __post_init__(self) -> None:
        if not 1 <= self.min_limit <= self.initial_limit <= self.max_limit:
            raise ValueError(
                "overload limits must satisfy 1 <= OVERLOAD_MIN_LIMIT <= OVERLOAD_INITIAL_LIMIT "
                f"<= OVERLOAD_MAX_LIMIT (got {self.min_limit}, {self.initial_limit}, "
                f"{self.max_limit})"
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> "LimitParameters":
        """The parameters the OVERLOAD_* settings give (ValueError when they contradict)."""
        return cls(
            min_limit=settings.overload_min_limit,
            max_limit=settings.overload_max_limit,
            initial_limit=settings.overload_initial_limit,
            tolerance=settings.overload_latency_tolerance,
            allowance_seconds=settings.overload_latency_allowance_ms / 1000,
            smoothing=settings.overload_smoothing,
            window_seconds=settings.overload_window_seconds,
            window_min_samples=settings.overload_window_min_samples,
            baseline_rise_seconds=settings.overload_baseline_rise_seconds,
            lag_threshold_seconds=settings.overload_lag_threshold_seconds,
            db_waiters_threshold=settings.overload_db_waiters_threshold,
        )


class _Baseline:
    __slots__ = ("latency", "updated")

    def __init__(self, latency: float, updated: float) -> None:
        self.latency = latency
        self.updated = updated


def _gradient(value: float, threshold: float) -> float:
    """1 up to `threshold`, then threshold / value, never below _MIN_GRADIENT."""
    if value <= threshold:
        return 1.0
    return max(_MIN_GRADIENT, threshold / value)


class AdaptiveLimit:
    """The limit (a float; admission uses its whole part) and the samples that move it."""

    def __init__(
        self,
        params: LimitParameters,
        signals: LoadSignals,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.params = params
        self.limit = float(params.initial_limit)
        # The last closed window's gradient (1: no congestion seen).
        self.gradient = 1.0
        # Smoothed mean latency of finished requests (0 until the first window closes).
        self.mean_latency = 0.0
        self._signals = signals
        self._clock = clock
        self._baselines: dict[str, _Baseline] = {}
        self._window_start = clock()
        self._ratios: list[float] = []
        self._latency_sum = 0.0
        self._samples = 0
        self._peak = 0

    def sample(self, route: str, latency: float, in_flight: int) -> bool:
        """Record a finished request: its route template, its latency in seconds and the
        requests running when it was admitted (itself included). True when a window closed
        (the limit may have changed)."""
        now = self._clock()
        self._samples += 1
        self._latency_sum += latency
        self._peak = max(self._peak, in_flight)
        ratio = self._observe(route, latency, now)
        if ratio is not None:
            self._ratios.append(ratio)
        params = self.params
        if self._samples < params.window_min_samples:
            return False
        if now - self._window_start < params.window_seconds:
            return False
        self._close_window(now)
        return True

    def expected_wait(self, position: int) -> float:
        """Seconds until the request at `position` in the queue (1: next) is likely admitted:
        with the process at its limit a slot frees every mean_latency / limit seconds. 0 while
        nothing is known yet."""
        return position * self.mean_latency / self.limit

    def baseline(self, route: str) -> float | None:
        """The route's no-load latency estimate in seconds (None before its first sample)."""
        baseline = self._baselines.get(route)
        return None if baseline is None else baseline.latency

    def _observe(self, route: str, latency: float, now: float) -> float | None:
        """Update the route's baseline; the sample's ratio to it (None for a first sample)."""
        baseline = self._baselines.get(route)
        if baseline is None:
            if len(self._baselines) >= _MAX_ROUTES:
                route = _OTHER_ROUTE
                baseline = self._baselines.get(route)
            if baseline is None:
                self._baselines[route] = _Baseline(latency, now)
                return None
        allowance = self.params.allowance_seconds
        ratio = (latency + allowance) / (baseline.latency + allowance)
        if latency < baseline.latency:
            weight = _BASELINE_ALPHA
        else:
            # Slower: followed with a time constant, so a surge of any length moves the
            # baseline by at most (its duration / rise seconds) of the way.
            weight = min(
                _BASELINE_ALPHA, (now - baseline.updated) / self.params.baseline_rise_seconds
            )
        baseline.latency += weight * (latency - baseline.latency)
        baseline.updated = now
        return ratio

    def _close_window(self, now: float) -> None:
        params = self.params
        window_latency = self._latency_sum / self._samples
        if self.mean_latency == 0.0:
            self.mean_latency = window_latency
        else:
            self.mean_latency += _LATENCY_ALPHA * (window_latency - self.mean_latency)
        lag, waiters = self._signals.take()
        ratio = statistics.median(self._ratios) if self._ratios else 1.0
        self.gradient = min(
            _gradient(ratio, params.tolerance),
            _gradient(lag, params.lag_threshold_seconds),
            _gradient(waiters, params.db_waiters_threshold),
        )
        limit = self.limit
        if self._peak * 2 >= limit:
            # Room to probe for more when nothing is congested; else back off in proportion.
            target = limit + math.sqrt(limit) if self.gradient >= 1.0 else limit * self.gradient
        else:
            # Unconstrained: drift towards twice the concurrency actually run, so a surge
            # after a calm spell is admitted from there, not from a limit never tested.
            target = min(limit, 2.0 * self._peak)
        limit += params.smoothing * (target - limit)
        self.limit = min(float(params.max_limit), max(float(params.min_limit), limit))
        self._window_start = now
        self._ratios.clear()
        self._latency_sum = 0.0
        self._samples = 0
        self._peak = 0
