"""Rate limiting without HTTP: token buckets shared through Redis, with an in-process twin.

`limiter.RateLimiter` decides whether an identity (a user, an IP, an e-mail address...) may have
one more request in a category; the ASGI middleware (app/middleware/rate_limiter.py) and product
code both ask it. Parts: `rules` (which category a request path is), `buckets` (the Lua script,
its batching runner and the cache of refusals), `local_buckets` (the same buckets in-process),
`concurrency` (requests in flight per identity: leases in Redis, or counts in-process).
"""
