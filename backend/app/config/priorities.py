"""The load shedder's table: which priority a request has, and how each priority queues.

Priorities, from the one kept longest to the one shed first:

* ``critical``: taking a test (start, answer, submit, complete), and a login of a user who is
  in the middle of one (see ``DEFAULT_ATTEMPT_AUTH_PATHS``);
* ``normal``: everything else a candidate or an administrator does;
* ``background``: admin search, AI generation, reports and the detailed health check.

Exempt paths (liveness, readiness, /metrics) are never queued or shed. Every value can be
replaced through the environment as JSON, like the rate-limit tiers, e.g.
``OVERLOAD_PRIORITY_PATHS='{"/api/tests/start": "critical"}'`` (a value replaces the whole
default). The table is validated when the app is built, so a typo fails at startup.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Priority = Literal["critical", "normal", "background"]
# Most important first: the order in which queued requests are admitted.
PRIORITIES: tuple[Priority, ...] = ("critical", "normal", "background")


class PriorityRule(BaseModel):
    """Paths starting with `prefix` (and containing `contains`, when set) have `priority`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prefix: str
    contains: str = ""
    priority: Priority


class PriorityQueue(BaseModel):
    """How requests of one priority wait when the process is at its limit.

    At most `size` wait at once, each at most `timeout_seconds` before it runs anyway, outside
    the limit; a request that would wait longer (judged from how fast its priority got slots)
    or finds the queue full is shed at once.
    Shed answers carry `Retry-After: retry_after_seconds`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    size: int = Field(ge=0)
    timeout_seconds: float = Field(ge=0)
    retry_after_seconds: int = Field(1, ge=1)


DEFAULT_QUEUES: dict[Priority, PriorityQueue] = {
    # Long and patient: a test-taker's answer is worth a wait of seconds.
    "critical": PriorityQueue(size=256, timeout_seconds=2.0, retry_after_seconds=1),
    "normal": PriorityQueue(size=128, timeout_seconds=1.0, retry_after_seconds=2),
    # Short: background work is the first to give way, and its clients can come back later.
    "background": PriorityQueue(size=10, timeout_seconds=0.25, retry_after_seconds=10),
}

DEFAULT_PRIORITY_PATHS: dict[str, Priority] = {
    "/api/tests/start": "critical",
    "/api/tests/submit": "critical",
    "/api/tests/complete": "critical",
    "/api/admin/candidates/search": "background",
    "/api/admin/ai-generate": "background",
    "/api/admin/results": "background",
    "/api/admin/dashboard": "background",
    "/health/detailed": "background",
}

# Checked in order after the exact paths.
DEFAULT_PRIORITY_PREFIXES: list[PriorityRule] = [
    PriorityRule(prefix="/api/tests/", contains="/answer", priority="critical"),
]

DEFAULT_METHOD_PRIORITIES: dict[str, Priority] = {}

# Probes and scrapes must answer during overload: they are how the fleet sees it.
DEFAULT_NEVER_SHED_PATHS: list[str] = ["/health", "/health/ready", "/metrics"]

# Logins that count as critical when they carry the bearer token (expired or not) of a user
# seen taking a test within OVERLOAD_ATTEMPT_MARKER_SECONDS.
DEFAULT_ATTEMPT_AUTH_PATHS: list[str] = ["/api/auth/login"]

# Critical routes whose success ends the attempt: the user's marker is cleared.
DEFAULT_ATTEMPT_END_PATHS: list[str] = ["/api/tests/complete"]
