"""The current request's context (request id, user id) in a contextvar, for log lines.

The request-context middleware binds one per HTTP request; `set_user_id` records the caller once
authentication resolves it; app.observability.logging puts both on every log line.
"""

import re
import uuid
from contextvars import ContextVar, Token
from dataclasses import dataclass

# Ids from clients and proxies are copied into every log line: a strict alphabet and length keep
# them from forging log content or bloating it.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


@dataclass(slots=True)
class RequestContext:
    """What log lines need to know about the current request.

    Mutable on purpose: sync dependencies run in a thread with a *copy* of the context, so a
    user id is recorded by changing this shared object, not by setting the variable again.
    """

    request_id: str
    user_id: int | None = None


_current: ContextVar[RequestContext | None] = ContextVar("request_context", default=None)


def current_request() -> RequestContext | None:
    """The context of the request being handled, or None outside a request."""
    return _current.get()


def bind_request(context: RequestContext) -> Token[RequestContext | None]:
    """Make `context` current; pass the token to `unbind_request` when the request ends."""
    return _current.set(context)


def unbind_request(token: Token[RequestContext | None]) -> None:
    """Restore the context that was current before `bind_request`."""
    _current.reset(token)


def set_user_id(user_id: int) -> None:
    """Record the authenticated user for the rest of the request's log lines."""
    context = _current.get()
    if context is not None:
        context.user_id = user_id


def accept_request_id(value: bytes | None) -> str:
    """The caller's request id if well-formed, else a new random one."""
    if value is not None:
        text = value.decode("latin-1")
        if _VALID_REQUEST_ID.fullmatch(text):
            return text
    return uuid.uuid4().hex
