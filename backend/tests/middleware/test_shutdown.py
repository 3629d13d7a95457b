"""ShutdownMiddleware on its own: which cancellations become a 503 and which stay cancellations.

The deadline path under a real gunicorn master is tested in tests/deploy/test_gunicorn.py; here
the middleware gets a request that never finishes and is cancelled, as uvicorn cancels it.
"""

import asyncio

import orjson
import pytest
from starlette.types import Message, Receive, Scope, Send

from app.middleware.shutdown import DrainState, ShutdownMiddleware

SCOPE: Scope = {"type": "http", "method": "GET", "path": "/api/jobs", "headers": []}


async def never_finishes(scope: Scope, receive: Receive, send: Send) -> None:
    await asyncio.Event().wait()


async def no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def cancelled_request(drain: DrainState) -> tuple[list[Message], asyncio.Task[None]]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    middleware = ShutdownMiddleware(never_finishes, drain=drain)
    task = asyncio.create_task(middleware(dict(SCOPE), no_body, send))
    await asyncio.sleep(0)
    assert drain.in_flight == 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return sent, task


async def test_a_cancellation_before_the_deadline_stays_a_cancellation() -> None:
    # A client that went away, or anything else cancelling the request: nothing is answered.
    drain = DrainState()
    drain.start()
    sent, task = await cancelled_request(drain)
    assert task.cancelled()
    assert sent == []
    assert drain.in_flight == 0


async def test_a_cancellation_at_the_deadline_answers_503_once_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    drain = DrainState()
    drain.reach_deadline()
    sent, task = await cancelled_request(drain)
    assert not task.cancelled() and task.exception() is None
    start, body = sent
    assert start["status"] == 503
    headers = {name.decode(): value.decode() for name, value in start["headers"]}
    assert headers["retry-after"] == "1"
    assert headers["connection"] == "close"
    assert orjson.loads(body["body"])["error"]["code"] == "shutting_down"
    assert drain.in_flight == 0
    cancelled = [r for r in caplog.records if "cancelled at the shutdown deadline" in r.message]
    assert len(cancelled) == 1 and cancelled[0].exc_info is None
