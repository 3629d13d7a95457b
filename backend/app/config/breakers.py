"""Circuit breaker settings: the named breakers and the per-breaker policy overrides.

A breaker's policy is the built-in defaults, then CIRCUIT_BREAKER_FAILURE_THRESHOLD and
CIRCUIT_BREAKER_RECOVERY_TIMEOUT (every breaker), then its entry in CIRCUIT_BREAKERS, JSON such as
``CIRCUIT_BREAKERS='{"gemini": {"failure_threshold": 3, "recovery_timeout": 10}}'``. Unknown
breaker names and unknown fields are rejected when the settings are read, so a typo stops the
process at startup instead of silently changing nothing.
"""

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

# Each guards one upstream: Gemini (AI), Pinecone (vector search), Cloudinary and any
# S3-compatible bucket (file storage).
BreakerName = Literal["gemini", "pinecone", "cloudinary", "s3"]
BREAKER_NAMES: tuple[BreakerName, ...] = get_args(BreakerName)


class BreakerOverride(BaseModel):
    """What one breaker changes from the global settings; unset fields keep them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Consecutive failures that open the breaker.
    failure_threshold: int | None = Field(None, ge=1)
    # Seconds the breaker stays open before letting a probe through (doubling on failed probes).
    recovery_timeout: float | None = Field(None, gt=0)
    # Successful probes in HALF_OPEN that close it again.
    success_threshold: int | None = Field(None, ge=1)
    # Probes allowed at once in HALF_OPEN, fleet-wide.
    half_open_max_calls: int | None = Field(None, ge=1)

    def changes(self) -> dict[str, Any]:
        """The fields this override sets (keyword arguments for the breaker's policy)."""
        return self.model_dump(exclude_none=True)


# By default only Gemini differs from the global settings: it gets 60 s to recover.
DEFAULT_BREAKER_OVERRIDES: dict[BreakerName, BreakerOverride] = {
    "gemini": BreakerOverride(recovery_timeout=60.0),
}
