"""The process's one outbound HTTP client, and the errors adapters raise for upstream trouble."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx

from app.config import Settings
from app.errors import AppError, ServiceUnavailable
from app.services.circuit_breaker import CircuitBreaker

T = TypeVar("T")


class UpstreamUnavailable(ServiceUnavailable):
    """An external service timed out, was unreachable or answered 5xx (503 to our client)."""

    code = "upstream_unavailable"


class UpstreamTimeout(UpstreamUnavailable):
    """An external service did not answer within its time budget (504 to our client)."""

    status_code = 504
    code = "upstream_timeout"
    message = "An external service did not answer in time."


class UpstreamRejected(AppError):
    """An external service refused our request (4xx) or answered something unusable."""

    status_code = 502
    code = "upstream_error"
    message = "An external service could not process the request."

    def __init__(self, *, service: str, upstream_status: int | None = None) -> None:
        super().__init__(service=service)
        # For callers (e.g. 404 -> not found); never part of the client-visible body.
        self.upstream_status = upstream_status


def create_http_client(settings: Settings) -> httpx.AsyncClient:
    """One long-lived client per process: pooled keep-alive connections to every upstream.

    Adapters pass their own per-request timeouts; this default only bounds a forgotten one.
    """
    return httpx.AsyncClient(
        timeout=httpx.Timeout(10.0, connect=3.0),
        limits=httpx.Limits(
            max_connections=settings.http_max_connections,
            max_keepalive_connections=settings.http_max_connections // 2,
        ),
        headers={"User-Agent": f"hiring-pro/{settings.app_version}"},
        follow_redirects=False,
    )


async def call_upstream(
    breaker: CircuitBreaker, limit: float, request: Callable[[], Awaitable[httpx.Response]]
) -> httpx.Response:
    """Send one request through ``breaker`` within ``limit`` seconds in total.

    Raises CircuitOpenError while the breaker is open, UpstreamTimeout when the time is up,
    UpstreamUnavailable for connection errors and 5xx, UpstreamRejected for 4xx. Error details
    stay in the logs' chain.
    """

    async def send() -> httpx.Response:
        # httpx timeouts are per phase (connect, read...); this bounds the whole exchange.
        async with asyncio.timeout(limit):
            response = await request()
        response.raise_for_status()
        return response

    try:
        return await breaker.call(send)
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code >= 500:
            raise UpstreamUnavailable(service=breaker.name) from exc
        raise UpstreamRejected(
            service=breaker.name, upstream_status=exc.response.status_code
        ) from exc
    except (httpx.TimeoutException, TimeoutError) as exc:
        raise UpstreamTimeout(service=breaker.name) from exc
    except httpx.TransportError as exc:
        raise UpstreamUnavailable(service=breaker.name) from exc
