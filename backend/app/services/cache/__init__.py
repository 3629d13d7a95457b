"""Cache-aside over Redis: TTL categories, tag generations, single-flight and stored HTTP bodies.

Parts: `scripts` (the Lua and the entry layout), `namespaces` (declaration, registry, metrics,
keys), `codec` (entry payloads, stored HTTP bodies and their ETags), `engine` (the `Cache` and the
`cached` decorator) and `invalidation` (invalidation after the database commit).

Keys. Every namespace keeps its keys in one Cluster hash slot, ``{prefix}:{<namespace>}:…``:
entries ``…:e:<app version>.<namespace version>:<key>``, their locks ``…:l:…`` and the namespace's
tag generations ``…:t:<tag>``. A deploy that changes a response shape bumps the app or namespace
version, so it never reads old entries; tag keys carry no version, so during a rolling deploy an
invalidation reaches old and new processes alike.

Tags. Each tag of a namespace has a generation counter. An entry records the generations it was
computed under (read *before* the computation) and is served only while they are current, so
invalidating a tag is one counter bump per namespace using it, whatever the number of entries, and
a writer storing a value computed from old data can never make it readable: its generations are
already out of date (the store script then skips the write). Tag keys are bounded (namespaces x
tags); entries expire.

Stampedes. Concurrent callers of one key in a process share one flight. Across processes the read
script takes a short lock when the entry is missing or stale: the lock holder recomputes, others
serve the stale entry (stale-while-revalidate) or poll for the fresh one until the lock's deadline.
Fresh TTLs get jitter so entries written together do not expire together.

Round trips. A lookup is one EVALSHA (entry, tag generations and, on a miss, the lock); lookups
started in the same event-loop turn share one pipeline. A tagged miss costs that plus one
store-and-unlock EVALSHA. Invalidation runs after the database commit (`invalidate_on_commit`
and `CacheInvalidationMiddleware`), before the response that reports the write.

Redis down or unset: every call is a bypass (the computation runs, nothing is cached), never an
error; invalidations that could not be sent are retried before this process reads Redis again.
"""

from app.services.cache.codec import CachedBody, content_etag, decode_value, encode_value
from app.services.cache.engine import Cache, cached
from app.services.cache.invalidation import (
    InvalidationScope,
    invalidate_on_commit,
    invalidation_scope,
)
from app.services.cache.namespaces import Namespace, make_key, namespaces_with

__all__ = [
    "Cache",
    "CachedBody",
    "InvalidationScope",
    "Namespace",
    "cached",
    "content_etag",
    "decode_value",
    "encode_value",
    "invalidate_on_commit",
    "invalidation_scope",
    "make_key",
    "namespaces_with",
]
