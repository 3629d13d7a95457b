"""Which priority a request has: the configured table (app/config/priorities.py), compiled once."""

from collections.abc import Mapping, Sequence

from app.config.priorities import Priority, PriorityRule

# Requests that no rule names: candidate reads and writes, admin pages.
FALLBACK_PRIORITY: Priority = "normal"


class PriorityRules:
    """The compiled table: a request's priority, or None when its path is exempt."""

    def __init__(
        self,
        exact_paths: Mapping[str, Priority],
        prefix_rules: Sequence[PriorityRule],
        method_priorities: Mapping[str, Priority],
        exempt_paths: Sequence[str],
    ) -> None:
        both = sorted(set(exact_paths) & set(exempt_paths))
        if both:
            raise ValueError(f"overload paths both exempt and prioritised: {', '.join(both)}")
        self._exact = dict(exact_paths)
        self._prefixes = [(rule.prefix, rule.contains, rule.priority) for rule in prefix_rules]
        self._methods = {method.upper(): priority for method, priority in method_priorities.items()}
        self._exempt = frozenset(exempt_paths)

    def priority(self, method: str, path: str) -> Priority | None:
        """The priority of a request, or None when it is never queued or shed."""
        if path in self._exempt:
            return None
        priority = self._exact.get(path)
        if priority is not None:
            return priority
        for prefix, contains, rule_priority in self._prefixes:
            if path.startswith(prefix) and contains in path:
                return rule_priority
        return self._methods.get(method, FALLBACK_PRIORITY)
