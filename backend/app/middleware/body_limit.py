"""A cap on request bodies, enforced before the app reads them (pure ASGI).

nginx caps bodies too, but the app must not depend on it (a direct connection, a proxy
misconfigured). A body that declares a Content-Length over the limit is refused at once, unread;
a body without one (chunked transfer encoding) is counted as it streams in and refused the moment
it passes the limit, so at most one chunk beyond the limit is ever held in memory. Either way the
answer is 413 `payload_too_large` in the shared error shape, and the connection is closed (the
rest of the body is never read).

Routes that read their bodies under a limit of their own (the multipart resume upload, bounded by
MAX_RESUME_BYTES) are listed in `own_limit_paths` and left to that limit.
"""

from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.error_handlers import error_response


class BodyLimitMiddleware:
    """413 for request bodies over `limit` bytes, except on `own_limit_paths`."""

    def __init__(self, app: ASGIApp, limit: int, own_limit_paths: Iterable[str] = ()) -> None:
        self.app = app
        self.limit = limit
        self.own_limit_paths = frozenset(own_limit_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.own_limit_paths:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await self._refuse(send)
            return

        received = 0
        refused = False
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    refused = True
                    if not response_started:
                        await self._refuse(send)
                    # To the app the client is gone: it stops reading and its answer is dropped.
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if refused:
                return
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            # The app failed because its body was cut off after we answered: nothing to add.
            if not refused:
                raise

    async def _refuse(self, send: Send) -> None:
        response = error_response(
            413,
            "payload_too_large",
            f"The request body must be at most {self.limit // 1024} KiB.",
            headers={"Connection": "close"},
        )
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": response.raw_headers,
            }
        )
        await send({"type": "http.response.body", "body": response.body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None
