"""The breaker's states and the snapshot every decision (in Redis or in the process) returns."""

from dataclasses import dataclass
from enum import StrEnum


class State(StrEnum):
    """What a breaker does with calls. The last two are set by operators, never automatically."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The shared state as one decision left it. ``remaining``: seconds until OPEN ends (or until
    the oldest probe permit expires in HALF_OPEN); ``moved``: the state this decision moved to."""

    state: State
    generation: int
    remaining: float
    moved: State | None = None
    verdict: str = ""


def visible_state(state: str, operator: str) -> State:
    """The state callers see: an operator's state, when set, hides the automatic one."""
    return State(operator) if operator else State(state)
