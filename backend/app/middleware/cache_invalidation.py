"""Pure ASGI: the cache tags a request's transactions commit are bumped before its response.

The session dependency commits before the response starts, so the bump lands after the commit and
before the client can learn the write succeeded; commits after that (background tasks) are sent
at once. See `invalidation_scope` in app.services.cache.
"""

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.deps import resources_of
from app.services.cache import invalidation_scope


class CacheInvalidationMiddleware:
    """Opens a holding invalidation scope per HTTP request and releases it at response start."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        async with invalidation_scope(resources_of(scope["app"]).cache, holding=True) as pending:

            async def send_after_invalidating(message: Message) -> None:
                if message["type"] == "http.response.start":
                    await pending.release()
                await send(message)

            await self.app(scope, receive, send_after_invalidating)
