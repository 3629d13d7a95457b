"""Admin bodies for the circuit breakers: their states and policies, and an operator's change."""

from typing import Literal

from pydantic import BaseModel

from app.schemas.common import StrictModel
from app.services.circuit_breaker import State


class BreakerOut(BaseModel):
    """One breaker as this process sees it after reading the shared state, with its policy."""

    name: str
    state: State
    # Seconds calls still fail fast (OPEN only).
    retry_after: float
    # Whether the state came from Redis (false: this process alone, Redis absent or down).
    shared: bool
    failure_threshold: int
    recovery_timeout: float
    success_threshold: int
    half_open_max_calls: int


class BreakerListOut(BaseModel):
    items: list[BreakerOut]


class BreakerStateIn(StrictModel):
    """``forced_open``: every call fails fast; ``disabled``: every call passes and nothing is
    counted; ``auto``: the breaker decides again (any change restarts it CLOSED)."""

    state: Literal["forced_open", "disabled", "auto"]
