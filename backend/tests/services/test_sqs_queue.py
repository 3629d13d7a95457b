"""The SQS producer against the moto server: message format, URL caching, retries, FIFO, size."""

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from app.config import Settings
from app.services.job_queue import (
    MAX_MESSAGE_BYTES,
    JobMessage,
    LocalJobQueue,
    MalformedMessage,
    MessageTooLarge,
    Outcome,
    QueueUnavailable,
)
from app.services.sqs_queue import SQSClient, SQSJobQueue
from tests.conftest import make_settings
from tests.support.moto_server import MotoServer
from tests.support.sqs_fixtures import sqs_settings
from tests.support.sqs_server import FaultyProxy, QueuePair, create_queue_pair, drain

EMAIL = {"to": "a@example.com", "subject": "s", "body": "b"}


@pytest.fixture
async def proxy(moto: MotoServer) -> AsyncIterator[FaultyProxy]:
    server = FaultyProxy(moto.url)
    await server.start()
    yield server
    await server.stop()


def producer_settings(
    tmp_path: Path, moto_url: str, queues: QueuePair, attempts: int = 4
) -> Settings:
    return make_settings(
        tmp_path,
        queue_backend="sqs",
        aws_endpoint_url=moto_url,
        sqs_queue_resume_parse=queues.name,
        sqs_queue_vector_index=queues.name,
        sqs_queue_email=queues.name,
        sqs_max_attempts=attempts,
    )


async def test_messages_are_json_jobs_routed_by_path(
    tmp_path: Path, moto: MotoServer, queues: QueuePair
) -> None:
    producer = SQSJobQueue(producer_settings(tmp_path, moto.url, queues))
    await producer.start()
    try:
        job_id = await producer.enqueue("email", EMAIL)
        depths = await producer.depths()
    finally:
        await producer.close()
    assert depths == {queues.name: {"visible": 1, "in_flight": 0, "delayed": 0}}
    [message] = drain(moto.url, queues.url)
    body = orjson.loads(message["Body"])
    assert set(body) == {"task", "payload", "id", "enqueued_at"}
    assert (body["task"], body["payload"], body["id"]) == ("email", EMAIL, job_id)
    assert datetime.fromisoformat(body["enqueued_at"]).tzinfo is not None
    assert message["MessageAttributes"]["beanstalk.sqsd.path"]["StringValue"] == "/worker/email"
    assert JobMessage.decode(message["Body"]).id == job_id


async def test_one_client_resolves_the_url_once_and_retries_throttling_and_5xx(
    tmp_path: Path, moto: MotoServer, queues: QueuePair, proxy: FaultyProxy
) -> None:
    producer = SQSJobQueue(producer_settings(tmp_path, proxy.url, queues, attempts=4))
    await producer.start()
    try:
        proxy.fail("SendMessage", 400, "ThrottlingException", 1)
        proxy.fail("SendMessage", 500, "InternalError", 1)
        proxy.fail("SendMessage", 503, "ServiceUnavailable", 1)
        job_ids = await asyncio.gather(*(producer.enqueue("email", EMAIL) for _ in range(5)))
    finally:
        await producer.close()
    assert proxy.calls["GetQueueUrl"] == 1
    assert proxy.calls["SendMessage"] == 5 + 3
    received = {orjson.loads(message["Body"])["id"] for message in drain(moto.url, queues.url)}
    assert received == set(job_ids)


async def test_an_outage_beyond_the_retries_is_queue_unavailable(
    tmp_path: Path, moto: MotoServer, queues: QueuePair, proxy: FaultyProxy
) -> None:
    producer = SQSJobQueue(producer_settings(tmp_path, proxy.url, queues, attempts=2))
    await producer.start()
    try:
        proxy.fail("SendMessage", 503, "ServiceUnavailable", 2)
        with pytest.raises(QueueUnavailable):
            await producer.enqueue("email", EMAIL)
        assert proxy.calls["SendMessage"] == 2
        await producer.enqueue("email", EMAIL)  # the service is back
    finally:
        await producer.close()
    assert len(drain(moto.url, queues.url)) == 1


async def test_a_missing_queue_is_queue_unavailable(tmp_path: Path, moto: MotoServer) -> None:
    missing = QueuePair(name="no-such-queue", url="", dlq_url="")
    producer = SQSJobQueue(producer_settings(tmp_path, moto.url, missing))
    await producer.start()
    try:
        with pytest.raises(QueueUnavailable):
            await producer.enqueue("email", EMAIL)
    finally:
        await producer.close()


async def test_fifo_queues_get_a_group_and_deduplicate_by_job_id(
    tmp_path: Path, moto: MotoServer
) -> None:
    fifo = create_queue_pair(moto.url, fifo=True)
    client = SQSClient(producer_settings(tmp_path, moto.url, fifo))
    await client.start()
    try:
        queue = client.queue(fifo.name)
        assert client.queue(fifo.name) is queue
        message = JobMessage("email", EMAIL)
        await queue.send(message)
        await queue.send(message)  # a retried send inside the deduplication window
        await queue.send(JobMessage("email", EMAIL), group_id="user-7")
    finally:
        await client.close()
    messages = drain(moto.url, fifo.url)
    assert [m["Attributes"]["MessageGroupId"] for m in messages] == ["email", "user-7"]
    assert orjson.loads(messages[0]["Body"])["id"] == message.id


async def test_messages_over_the_sqs_limit_are_refused_before_sending(
    tmp_path: Path, database_url: str, moto: MotoServer, queues: QueuePair, proxy: FaultyProxy
) -> None:
    big = {**EMAIL, "body": "x" * MAX_MESSAGE_BYTES}
    producer = SQSJobQueue(producer_settings(tmp_path, proxy.url, queues))
    await producer.start()
    try:
        with pytest.raises(MessageTooLarge):
            await producer.enqueue("email", big)
        # Just under the limit still goes through.
        fits = {**EMAIL, "body": "x" * (MAX_MESSAGE_BYTES - 400)}
        await producer.enqueue("email", fits)
    finally:
        await producer.close()
    assert proxy.calls["SendMessage"] == 1

    async def never(_: object) -> Outcome:
        raise AssertionError("must not run")

    local = LocalJobQueue(sqs_settings(tmp_path, database_url, moto, queues), never)
    with pytest.raises(MessageTooLarge):
        await local.enqueue("email", big)
    await local.close()


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b'{"task": "email"}',
        b'{"task": 1, "payload": {}, "id": "x", "enqueued_at": "2026-01-01T00:00:00+00:00"}',
    ],
)
def test_malformed_bodies_are_detected(body: bytes) -> None:
    with pytest.raises(MalformedMessage):
        JobMessage.decode(body)


async def test_unknown_tasks_are_refused_by_the_producer(
    tmp_path: Path, moto: MotoServer, queues: QueuePair
) -> None:
    producer = SQSJobQueue(producer_settings(tmp_path, moto.url, queues))
    await producer.start()
    try:
        with pytest.raises(ValueError, match="unknown queued task"):
            await producer.enqueue("cleanup-sessions", {})
    finally:
        await producer.close()
