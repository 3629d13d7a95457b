"""Distributed circuit breakers: CLOSED -> OPEN -> HALF_OPEN, shared by every process through Redis.

Parts: ``state`` (the states and a decision's snapshot), ``policy`` (BreakerConfig, which errors
count, Retry-After), ``scripts`` (the Lua decisions), ``local`` (their in-process twin),
``breaker`` (CircuitBreaker) and ``registry`` (the named breakers, configured from settings).

Design (resilience4j semantics, made safe across processes):

* Every state decision is one Lua script run atomically in Redis on four keys that share the
  breaker's hash tag (``cb:{name}:s`` state hash, ``cb:{name}:w`` time-window buckets,
  ``cb:{name}:p`` probe permits, ``cb:{name}:c`` count-window batches), so N processes recording
  failures at once open the breaker exactly once, and exactly ``half_open_max_calls`` probes get
  a permit fleet-wide. Time is Redis's ``TIME``: no clock skew.
* The healthy path costs no Redis round trip: outcomes are counted in the process and published in
  batches (at once after any failure, otherwise every ``batch_size`` calls or ``sync_interval``
  seconds). Each publication returns the fleet state, so a failure storm opens the breaker for every
  process within one published batch.
* The breaker opens on ``failure_threshold`` consecutive failures, or when the failure rate or the
  slow-call rate over the last ``window_seconds`` (or the last ``window_calls`` calls, counted at
  batch granularity) reaches its threshold (after ``minimum_calls``).
  The open duration backs off exponentially on failed probes and honours an upstream's Retry-After.
* Probe permits expire after ``permit_ttl``: a probe that crashed or hangs past it counts as failed
  and the breaker re-opens instead of staying HALF_OPEN.
* Operators can force a breaker open or disable it at runtime (shared through Redis).
* Without Redis (not configured, or unreachable) the same state machine runs in the process.
* Each named breaker's policy comes from settings (app/config/breakers.py): the global
  CIRCUIT_BREAKER_* values, overridden per breaker by CIRCUIT_BREAKERS.
"""

from app.services.circuit_breaker.breaker import CircuitBreaker, CircuitOpenError, Fallback
from app.services.circuit_breaker.policy import (
    BreakerConfig,
    default_is_failure,
    default_retry_after,
    parse_retry_after,
)
from app.services.circuit_breaker.registry import BreakerRegistry, breaker_config, create_breakers
from app.services.circuit_breaker.state import Snapshot, State

__all__ = [
    "BreakerConfig",
    "BreakerRegistry",
    "CircuitBreaker",
    "CircuitOpenError",
    "Fallback",
    "Snapshot",
    "State",
    "breaker_config",
    "create_breakers",
    "default_is_failure",
    "default_retry_after",
    "parse_retry_after",
]
