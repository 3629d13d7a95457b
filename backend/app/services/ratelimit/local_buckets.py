"""The in-process twin of the Redis token-bucket script (buckets.py), with the same exact
integer arithmetic."""

from app.services.ratelimit.buckets import Decision, DecisionRequest


class LocalBuckets:
    """The same buckets in this process: the no-Redis mode, and the fallback when Redis is down.

    `share` divides every bucket (capacity and refill) by the number of processes expected to
    share the limit, never below one token of capacity, so a fallback is never fully open.
    """

    def __init__(self, max_keys: int) -> None:
        # key -> (level in units, last update in us); insertion order doubles as LRU order.
        self._state: dict[str, tuple[int, int]] = {}
        self._max_keys = max_keys

    def decide(self, request: DecisionRequest, share: int, now_us: int) -> Decision:
        """Take one token from every bucket of `request`, or from none."""
        levels: list[tuple[int, int, int, int]] = []  # (level, full, rate, unit)
        allowed = True
        wait = 0
        limits = request.specs.limits
        for key, (capacity, refill, period_us) in zip(request.keys, limits, strict=True):
            unit = period_us * share
            full = max(1, capacity // share) * unit
            level = full
            state = self._state.get(key)
            if state is not None:
                elapsed = min(max(0, now_us - state[1]), full)
                level = min(full, state[0] + elapsed * refill)
            if level < unit:
                allowed = False
                wait = max(wait, -(-(unit - level) // refill))
            levels.append((level, full, refill, unit))
        remaining = -1
        reset = 0
        for key, (level, full, rate, unit) in zip(request.keys, levels, strict=True):
            if allowed:
                level -= unit
                self._store(key, level, now_us)
            tokens = level // unit
            remaining = tokens if remaining < 0 else min(remaining, tokens)
            reset = max(reset, -(-(full - level) // rate))
        return Decision(allowed=allowed, remaining=remaining, retry_after_us=wait, reset_us=reset)

    def _store(self, key: str, level: int, now_us: int) -> None:
        self._state.pop(key, None)
        if len(self._state) >= self._max_keys:
            # Drop the least recently used bucket; a dropped bucket comes back full, which only
            # matters for keys idle longer than everything else in the table.
            del self._state[next(iter(self._state))]
        self._state[key] = (level, now_us)
