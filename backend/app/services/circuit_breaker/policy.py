"""A breaker's policy: its numbers (BreakerConfig), which errors count as failures, and how long
an upstream asked us to stay away (Retry-After)."""

import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import botocore.exceptions
import httpx
import orjson


def default_is_failure(exc: BaseException) -> bool:
    """Timeouts, connection errors and 5xx answers count; 4xx (our bad request) does not.

    Understands httpx (Gemini, Pinecone) and botocore (S3) errors.
    """
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code >= 500
    if isinstance(exc, botocore.exceptions.ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return int(status) >= 500
    return isinstance(
        exc,
        httpx.TransportError
        | TimeoutError
        | ConnectionError
        | botocore.exceptions.ConnectionError
        | botocore.exceptions.HTTPClientError,
    )


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


def default_retry_after(exc: BaseException) -> float | None:
    """The upstream's Retry-After, when the failure is an HTTP answer that carries one."""
    if isinstance(exc, httpx.HTTPStatusError):
        return parse_retry_after(exc.response.headers.get("retry-after"))
    return None


@dataclass(frozen=True)
class BreakerConfig:
    """Per-breaker policy. Durations in seconds; rates in 0..1 (None disables that rule)."""

    failure_threshold: int = 5
    recovery_timeout: float = 30.0
    success_threshold: int = 2
    half_open_max_calls: int = 1
    permit_ttl: float = 30.0
    failure_rate_threshold: float | None = 0.5
    slow_call_rate_threshold: float | None = 1.0
    slow_call_duration: float | None = None
    minimum_calls: int = 20
    window_seconds: int = 60
    # Count-based window instead of the time-based one: the last N calls (whole batches).
    window_calls: int | None = None
    backoff_multiplier: float = 2.0
    max_open_duration: float = 600.0
    batch_size: int = 100
    sync_interval: float = 1.0
    is_failure: Callable[[BaseException], bool] = default_is_failure
    retry_after_of: Callable[[BaseException], float | None] = default_retry_after
    state_ttl: float = 86_400.0

    def script_json(self) -> bytes:
        """The numbers the Lua scripts need (milliseconds and permille: Lua returns integers)."""

        def permille(rate: float | None) -> int:
            return 1001 if rate is None else round(rate * 1000)

        return orjson.dumps(
            {
                "threshold": self.failure_threshold,
                "recovery": round(self.recovery_timeout * 1000),
                "backoff": self.backoff_multiplier,
                "max_open": round(self.max_open_duration * 1000),
                "min_calls": self.minimum_calls,
                "window": self.window_seconds,
                "window_calls": self.window_calls or 0,
                "rate": permille(self.failure_rate_threshold),
                "slow_rate": permille(
                    self.slow_call_rate_threshold if self.slow_call_duration is not None else None
                ),
                "half_max": self.half_open_max_calls,
                "success": self.success_threshold,
                "permit_ttl": round(self.permit_ttl * 1000),
                "ttl": round(self.state_ttl * 1000),
            }
        )
