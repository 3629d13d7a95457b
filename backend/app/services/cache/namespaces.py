"""Cache namespaces: their declaration, the process-wide registry and their metrics.

Namespaces register themselves when declared (at import time), so `namespaces_with(tag)` finds
every namespace a tag invalidates in any process that imports their declarations. `make_key`
builds the keys callers use inside a namespace.
"""

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson
from prometheus_client import Counter

CACHE_HITS = Counter(
    "hiringpro_cache_hits_total",
    "Lookups served from the cache: fresh, stale (while one caller refreshes), or merged into "
    "a concurrent lookup of the same key in this process.",
    ["namespace", "state"],
)
CACHE_MISSES = Counter(
    "hiringpro_cache_misses_total", "Lookups that found no valid entry.", ["namespace"]
)
CACHE_RECOMPUTES = Counter(
    "hiringpro_cache_recomputes_total",
    "Values computed for the cache (by the lock holder).",
    ["namespace"],
)
CACHE_INVALIDATIONS = Counter(
    "hiringpro_cache_invalidations_total", "Tag generation bumps.", ["namespace"]
)
CACHE_BYPASSES = Counter(
    "hiringpro_cache_bypasses_total",
    "Lookups computed without Redis (down or unset).",
    ["namespace"],
)

_NAMESPACES: dict[str, "Namespace"] = {}


@dataclass(frozen=True, slots=True)
class NamespaceMetrics:
    """A namespace's metric children, bound once: a hit must not pay for a labels() lookup."""

    hits_fresh: Counter
    hits_stale: Counter
    hits_merged: Counter
    misses: Counter
    recomputes: Counter
    invalidations: Counter
    bypasses: Counter

    @classmethod
    def bound_to(cls, namespace: str) -> "NamespaceMetrics":
        """The children of the cache counters labelled with `namespace`."""
        return cls(
            hits_fresh=CACHE_HITS.labels(namespace, "fresh"),
            hits_stale=CACHE_HITS.labels(namespace, "stale"),
            hits_merged=CACHE_HITS.labels(namespace, "merged"),
            misses=CACHE_MISSES.labels(namespace),
            recomputes=CACHE_RECOMPUTES.labels(namespace),
            invalidations=CACHE_INVALIDATIONS.labels(namespace),
            bypasses=CACHE_BYPASSES.labels(namespace),
        )


@dataclass(frozen=True, eq=False)
class Namespace:
    """A family of entries: its TTL category, the tags that invalidate it and a shape version.

    `per_user` namespaces refuse keys without a user id, so one user's data can never be served
    to another. Declared once at import time; the registry lets `invalidate(tag)` find every
    namespace that uses the tag in any process that imports the declaration.
    """

    name: str
    ttl_category: str = "default"
    tags: tuple[str, ...] = ()
    version: int = 1
    per_user: bool = False
    metrics: NamespaceMetrics = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.name or any(char in self.name for char in "{}:|"):
            raise ValueError(f"invalid cache namespace name {self.name!r}")
        if self.name in _NAMESPACES:
            raise ValueError(f"cache namespace {self.name!r} is declared twice")
        _NAMESPACES[self.name] = self
        object.__setattr__(self, "metrics", NamespaceMetrics.bound_to(self.name))


def namespaces_with(tags: Iterable[str]) -> list[Namespace]:
    """The declared namespaces that one of `tags` invalidates."""
    wanted = set(tags)
    return [ns for ns in _NAMESPACES.values() if wanted.intersection(ns.tags)]


def make_key(*parts: str | int | float | bool | None) -> str:
    """A fixed-length key for the given parts (a hash of their JSON: no separator ambiguity)."""
    return hashlib.blake2b(orjson.dumps(parts), digest_size=16).hexdigest()
