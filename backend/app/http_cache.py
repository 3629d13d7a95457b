"""Cached response bodies as HTTP responses: the stored ETag, and 304 when the client has it."""

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from app.services.cache import Cache, Namespace


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an If-None-Match header names `etag` (weak comparison, as RFC 9110 asks)."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    return any(
        candidate.strip().removeprefix("W/") == etag for candidate in if_none_match.split(",")
    )


async def cached_response(
    request: Request,
    cache: Cache,
    namespace: Namespace,
    key: str,
    compute_body: Callable[[], Awaitable[bytes]],
    *,
    user_id: int | None = None,
    media_type: str = "application/json",
) -> Response:
    """A 200 whose body is served as stored, with its content ETag; 304 on a match."""
    cached = await cache.http_body(namespace, key, compute_body, user_id=user_id)
    if etag_matches(request.headers.get("if-none-match"), cached.etag):
        return Response(status_code=304, headers={"ETag": cached.etag})
    return Response(cached.body, media_type=media_type, headers={"ETag": cached.etag})
