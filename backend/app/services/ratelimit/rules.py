"""Which rate-limit category a request belongs to: the configured table, compiled once."""

from collections.abc import Mapping, Sequence

from app.config.rate_limits import PathRule, RateLimitTier

FALLBACK_CATEGORY = "default"


class RateLimitRules:
    """The compiled table: which category (or None for exempt) a request belongs to."""

    def __init__(
        self,
        tiers: Mapping[str, RateLimitTier],
        exact_paths: Mapping[str, str],
        prefix_rules: Sequence[PathRule],
        method_categories: Mapping[str, str],
        exempt_paths: Sequence[str],
    ) -> None:
        referenced = {
            FALLBACK_CATEGORY,
            *exact_paths.values(),
            *(rule.category for rule in prefix_rules),
            *method_categories.values(),
        }
        missing = sorted(referenced - tiers.keys())
        if missing:
            raise ValueError(f"rate-limit categories without a tier: {', '.join(missing)}")
        self.tiers = dict(tiers)
        self._exact = dict(exact_paths)
        self._prefixes = [(rule.prefix, rule.contains, rule.category) for rule in prefix_rules]
        self._methods = {method.upper(): category for method, category in method_categories.items()}
        self._exempt = frozenset(exempt_paths)

    def category(self, method: str, path: str) -> str | None:
        """The category of a request, or None when its path is exempt."""
        if path in self._exempt:
            return None
        category = self._exact.get(path)
        if category is not None:
            return category
        for prefix, contains, rule_category in self._prefixes:
            if path.startswith(prefix) and contains in path:
                return rule_category
        return self._methods.get(method, FALLBACK_CATEGORY)
