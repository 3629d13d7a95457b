"""The local sqsd against moto and a real HTTP server: EB's headers, 200-only deletion,
redelivery after failures and inactivity, the concurrency limit."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from aiohttp import web

from devtools.local_sqsd import LocalSqsd, SqsdConfig
from tests.support.moto_server import MotoServer
from tests.support.redis_server import free_port
from tests.support.sqs_server import QueuePair, sqs_client
from tests.support.wait import wait_until

Behaviour = Callable[[web.Request], Awaitable[int]]


@dataclass
class Endpoint:
    """An HTTP server standing in for the worker app; records what sqsd sends."""

    behaviour: Behaviour
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    active: int = 0
    max_active: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.path, dict(request.headers), await request.read()))
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            status = await self.behaviour(request)
        finally:
            self.active -= 1
        return web.Response(status=status)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Behaviour], Awaitable[tuple[Endpoint, str]]]]:
    runners: list[web.AppRunner] = []

    async def start(behaviour: Behaviour) -> tuple[Endpoint, str]:
        endpoint = Endpoint(behaviour)
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", endpoint.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        return endpoint, f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


async def run_until(daemon: LocalSqsd, done: Callable[[], bool]) -> None:
    """Run the daemon until ``done()`` holds, then stop it cleanly."""
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))

    async def finished() -> bool:
        assert not task.done(), task
        return done()

    try:
        # A few receive polls (1 s long polls) and deliveries.
        await wait_until(finished, within=20, what="the deliveries")
    finally:
        stop.set()
        await task


def queue_is_empty(moto: MotoServer, queues: QueuePair) -> bool:
    attributes: dict[str, str] = sqs_client(moto.url).get_queue_attributes(
        QueueUrl=queues.url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return attributes == {
        "ApproximateNumberOfMessages": "0",
        "ApproximateNumberOfMessagesNotVisible": "0",
    }


def config(moto: MotoServer, queues: QueuePair, url: str, **overrides: Any) -> SqsdConfig:
    base = SqsdConfig(
        queue_url=queues.url,
        worker_url=url,
        http_path="/worker/default",
        wait_time_seconds=1,
        error_visibility_timeout=0,
        endpoint_url=moto.url,
    )
    return replace(base, **overrides)


async def test_posts_with_eb_headers_and_deletes_only_on_200(
    moto: MotoServer,
    queues: QueuePair,
    serve: Callable[[Behaviour], Awaitable[tuple[Endpoint, str]]],
) -> None:
    statuses = iter([201, 204, 200])

    async def answer(_: web.Request) -> int:
        return next(statuses)

    endpoint, url = await serve(answer)
    sqs_client(moto.url).send_message(
        QueueUrl=queues.url,
        MessageBody='{"hello": "world"}',
        MessageAttributes={
            "beanstalk.sqsd.path": {"DataType": "String", "StringValue": "/worker/email"},
            "tenant": {"DataType": "String", "StringValue": "acme"},
        },
    )
    async with LocalSqsd(config(moto, queues, url)) as daemon:
        await run_until(daemon, lambda: len(endpoint.requests) == 3)
    # 201 and 204 are failures: the message came back each time; 200 deleted it.
    assert [path for path, _, _ in endpoint.requests] == ["/worker/email"] * 3
    assert [h["X-Aws-Sqsd-Receive-Count"] for _, h, _ in endpoint.requests] == ["1", "2", "3"]
    _, headers, body = endpoint.requests[-1]
    assert body == b'{"hello": "world"}'
    assert headers["User-Agent"].startswith("aws-sqsd/3.")
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Aws-Sqsd-Queue"] == queues.name
    assert headers["X-Aws-Sqsd-Msgid"] == endpoint.requests[0][1]["X-Aws-Sqsd-Msgid"]
    assert headers["X-Aws-Sqsd-First-Received-At"].endswith("Z")
    assert headers["X-Aws-Sqsd-Sent-At"].endswith("Z")
    assert headers["X-Aws-Sqsd-Attr-tenant"] == "acme"
    assert headers["X-Aws-Sqsd-Path"] == "/worker/email"
    assert queue_is_empty(moto, queues)


async def test_no_answer_within_the_inactivity_timeout_means_retry(
    moto: MotoServer,
    queues: QueuePair,
    serve: Callable[[Behaviour], Awaitable[tuple[Endpoint, str]]],
) -> None:
    async def hang_first(request: web.Request) -> int:
        if request.headers["X-Aws-Sqsd-Receive-Count"] == "1":
            await asyncio.sleep(3)
        return 200

    endpoint, url = await serve(hang_first)
    sqs_client(moto.url).send_message(QueueUrl=queues.url, MessageBody="{}")
    async with LocalSqsd(config(moto, queues, url, inactivity_timeout=0.5)) as daemon:
        # Stopping waits for the second delivery (and its delete) to finish.
        await run_until(daemon, lambda: len(endpoint.requests) == 2)
    assert [h["X-Aws-Sqsd-Receive-Count"] for _, h, _ in endpoint.requests] == ["1", "2"]
    assert [path for path, _, _ in endpoint.requests] == ["/worker/default"] * 2
    assert queue_is_empty(moto, queues)


async def test_concurrency_limit_is_honoured(
    moto: MotoServer,
    queues: QueuePair,
    serve: Callable[[Behaviour], Awaitable[tuple[Endpoint, str]]],
) -> None:
    async def slow(_: web.Request) -> int:
        await asyncio.sleep(0.2)
        return 200

    endpoint, url = await serve(slow)
    client = sqs_client(moto.url)
    for number in range(12):
        client.send_message(QueueUrl=queues.url, MessageBody=f'{{"n": {number}}}')
    async with LocalSqsd(config(moto, queues, url, concurrency=3)) as daemon:
        await run_until(daemon, lambda: len(endpoint.requests) == 12 and endpoint.active == 0)
    assert endpoint.max_active <= 3
    assert sorted(body for _, _, body in endpoint.requests) == sorted(
        f'{{"n": {number}}}'.encode() for number in range(12)
    )
    assert queue_is_empty(moto, queues)
