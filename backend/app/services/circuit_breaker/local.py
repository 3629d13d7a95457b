"""The in-process twin of the Lua scripts: the same state machine for one process.

Used when Redis is not configured or unreachable, seeded with the last shared state this process
saw. Each method mirrors one script (``report``, ``acquire``, ``release``, ``set_operator``) and
decides with the same integer arithmetic, so both backends decide alike. Times are
``time.monotonic()`` seconds.
"""

from collections import deque
from dataclasses import dataclass, field

from app.services.circuit_breaker.policy import BreakerConfig
from app.services.circuit_breaker.state import Snapshot, State, visible_state


@dataclass
class LocalMachine:
    """The same state machine as the Lua scripts, for one process (no Redis, or Redis down)."""

    config: BreakerConfig
    state: str = "closed"
    generation: int = 0
    open_until: float = 0.0
    opens: int = 0
    consecutive: int = 0
    half_open_successes: int = 0
    operator: str = ""
    window: dict[int, list[int]] = field(default_factory=dict)
    batches: deque[tuple[int, int, int]] = field(default_factory=deque)
    permits: dict[str, float] = field(default_factory=dict)
    moved: str = ""

    def seed(self, snapshot: Snapshot, now: float) -> None:
        """Continue from the last shared state this process saw (Redis just became unreachable)."""
        if snapshot.state in (State.FORCED_OPEN, State.DISABLED):
            self.operator, self.state = snapshot.state.value, "closed"
        elif snapshot.state is State.CLOSED:
            self.operator, self.state = "", "closed"
        else:
            # OPEN or HALF_OPEN: stay open for what was left (a probe permit is not carried over).
            self.operator, self.state = "", "open"
            self.open_until = now + snapshot.remaining
        self.window.clear()
        self.batches.clear()
        self.permits.clear()
        self.consecutive = self.half_open_successes = 0

    def _begin(self, now: float) -> None:
        self.moved = ""
        if self.state == "half_open" and any(exp <= now for exp in self.permits.values()):
            self._open(0.0, now)

    def _open(self, hold: float, now: float) -> None:
        cfg = self.config
        duration = cfg.recovery_timeout * cfg.backoff_multiplier**self.opens
        duration = min(max(duration, hold), cfg.max_open_duration)
        self.state, self.open_until = "open", now + duration
        self.opens += 1
        self.consecutive = self.half_open_successes = 0
        self.generation += 1
        self.moved = "open"
        self.window.clear()
        self.batches.clear()
        self.permits.clear()

    def _close(self) -> None:
        self.state, self.open_until = "closed", 0.0
        self.opens = self.consecutive = self.half_open_successes = 0
        self.generation += 1
        self.moved = "closed"
        self.window.clear()
        self.batches.clear()
        self.permits.clear()

    def _finish(self, now: float, verdict: str = "") -> Snapshot:
        remaining = 0.0
        if self.state == "open":
            remaining = self.open_until - now
        elif self.state == "half_open" and len(self.permits) >= self.config.half_open_max_calls:
            remaining = min(self.permits.values()) - now
        return Snapshot(
            state=visible_state(self.state, self.operator),
            generation=self.generation,
            remaining=max(remaining, 0.0),
            moved=State(self.moved) if self.moved else None,
            verdict=verdict,
        )

    def report(
        self,
        generation: int,
        calls: int,
        failures: int,
        slow: int,
        trailing: int,
        had_success: bool,
        hold: float,
        now: float,
    ) -> Snapshot:
        """Add a batch of outcomes (the REPORT script); may open the breaker."""
        self._begin(now)
        cfg = self.config
        if (
            self.state == "closed"
            and not self.operator
            and calls > 0
            and generation in (-1, self.generation)
        ):
            total = self._count(calls, failures, slow, now)
            self.consecutive = trailing if had_success else self.consecutive + failures
            if self.consecutive >= cfg.failure_threshold or (
                total[0] >= cfg.minimum_calls
                and (
                    _reached(total[1], total[0], cfg.failure_rate_threshold)
                    or (
                        cfg.slow_call_duration is not None
                        and _reached(total[2], total[0], cfg.slow_call_rate_threshold)
                    )
                )
            ):
                self._open(hold, now)
        return self._finish(now)

    def _count(self, calls: int, failures: int, slow: int, now: float) -> list[int]:
        """Add a batch to the window; the window's (calls, failures, slow) totals."""
        cfg = self.config
        if cfg.window_calls:
            self.batches.appendleft((calls, failures, slow))
            total, keep = [0, 0, 0], len(self.batches)
            for index, batch in enumerate(self.batches, 1):
                total = [a + b for a, b in zip(total, batch, strict=True)]
                if total[0] >= cfg.window_calls:
                    keep = index
                    break
            while len(self.batches) > keep:
                self.batches.pop()
            return total
        second = int(now)
        bucket = self.window.setdefault(second, [0, 0, 0])
        bucket[0] += calls
        bucket[1] += failures
        bucket[2] += slow
        for old in [sec for sec in self.window if sec <= second - cfg.window_seconds]:
            del self.window[old]
        return [sum(b[i] for b in self.window.values()) for i in range(3)]

    def acquire(self, permit: str, now: float) -> Snapshot:
        """Admit a call while not CLOSED (the ACQUIRE script): permit, pass or reject."""
        self._begin(now)
        if self.operator == "forced_open":
            return self._finish(now, "reject")
        if self.operator == "disabled":
            return self._finish(now, "pass")
        if self.state == "open" and now >= self.open_until:
            self.state, self.half_open_successes = "half_open", 0
            self.generation += 1
            self.moved = "half_open"
            self.permits.clear()
        if self.state == "closed":
            return self._finish(now, "pass")
        if self.state == "open":
            return self._finish(now, "reject")
        if len(self.permits) < self.config.half_open_max_calls:
            self.permits[permit] = now + self.config.permit_ttl
            return self._finish(now, "permit")
        return self._finish(now, "reject")

    def release(self, permit: str, outcome: str, hold: float, now: float) -> Snapshot:
        """Return a probe permit with its outcome (the RELEASE script)."""
        self._begin(now)
        if self.permits.pop(permit, None) is not None and self.state == "half_open":
            if outcome == "success":
                self.half_open_successes += 1
                if self.half_open_successes >= self.config.success_threshold:
                    self._close()
            elif outcome == "failure":
                self._open(hold, now)
        return self._finish(now)

    def set_operator(self, operator: str, now: float) -> Snapshot:
        """Set or clear the operator state (the OPERATOR script)."""
        self._begin(now)
        if operator != self.operator:
            self.operator = operator
            self._close()
            if operator:
                self.moved = operator
        return self._finish(now)


def _reached(count: int, total: int, rate: float | None) -> bool:
    # Same integer arithmetic as the Lua (permille), so both backends decide alike.
    threshold = 1001 if rate is None else round(rate * 1000)
    return count * 1000 >= threshold * total
