"""The job queue on SQS: one aioboto3 client per process, queue URLs resolved once.

A message body is a :class:`JobMessage`'s JSON. Bodies stay small: files live in storage and a
message carries the storage key. Throttling, 5xx and connection errors are retried
by botocore's ``standard`` retry mode (exponential backoff with jitter, SQS_MAX_ATTEMPTS tries);
what still fails becomes :class:`QueueUnavailable` (503 to a web client).
"""

import asyncio
from contextlib import AsyncExitStack
from typing import Any

import aioboto3
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from app.config import Settings
from app.services.job_queue import (
    MAX_MESSAGE_BYTES,
    QUEUED_TASKS,
    JobMessage,
    MessageTooLarge,
    QueueUnavailable,
    job_message,
    task_path,
)

# EB's sqsd posts a message to the path in this attribute (cron tasks use it too).
PATH_ATTRIBUTE = "beanstalk.sqsd.path"


def message_size(body: bytes, attributes: dict[str, dict[str, str]]) -> int:
    """The size SQS charges against its limit: the body plus every attribute's name, type and
    value."""
    size = len(body)
    for name, value in attributes.items():
        size += len(name.encode()) + len(value["DataType"].encode())
        size += len(value.get("StringValue", "").encode())
    return size


class SQSClient:
    """The process's one SQS client (created in the lifespan, closed at shutdown)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._stack = AsyncExitStack()
        self._client: Any = None
        self._queues: dict[str, SQSQueue] = {}

    async def start(self) -> None:
        """Open the client's connection pool."""
        settings = self._settings
        config = AioConfig(
            connect_timeout=min(3.0, settings.sqs_timeout_seconds),
            read_timeout=settings.sqs_timeout_seconds,
            retries={"total_max_attempts": settings.sqs_max_attempts, "mode": "standard"},
            max_pool_connections=settings.http_max_connections,
        )
        session = aioboto3.Session(region_name=settings.aws_region)
        self._client = await self._stack.enter_async_context(
            session.client("sqs", endpoint_url=settings.aws_endpoint_url, config=config)
        )

    @property
    def client(self) -> Any:
        """The aiobotocore SQS client (after :meth:`start`)."""
        if self._client is None:
            raise RuntimeError("SQSClient.start() was not called")
        return self._client

    def queue(self, name: str) -> "SQSQueue":
        """The queue called ``name`` (one object per name, so its URL is resolved once)."""
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = SQSQueue(name, self)
        return queue

    async def close(self) -> None:
        """Close the connection pool."""
        self._client = None
        await self._stack.aclose()


class SQSQueue:
    """A named queue: standard, or FIFO when the name ends with ``.fifo``."""

    def __init__(self, name: str, client: SQSClient) -> None:
        self.name = name
        self.fifo = name.endswith(".fifo")
        self._client = client
        self._url: str | None = None
        self._lock = asyncio.Lock()

    async def url(self) -> str:
        """The queue URL, asked of SQS once and cached."""
        if self._url is None:
            async with self._lock:
                if self._url is None:
                    response = await self._call("get_queue_url", QueueName=self.name)
                    self._url = str(response["QueueUrl"])
        return self._url

    async def send(
        self,
        message: JobMessage,
        *,
        group_id: str | None = None,
        deduplication_id: str | None = None,
        path: str | None = None,
    ) -> str:
        """Send ``message``; returns the SQS message id.

        FIFO queues need a group id (default: the task, i.e. one ordered stream per task) and
        get the job id as deduplication id, so a retried send inside SQS's 5-minute window is
        stored once. ``path`` sets the attribute sqsd routes on.
        """
        body = message.encode()
        attributes = {PATH_ATTRIBUTE: {"DataType": "String", "StringValue": path}} if path else {}
        size = message_size(body, attributes)
        if size > MAX_MESSAGE_BYTES:
            raise MessageTooLarge(
                f"{message.task} message is {size} bytes; SQS accepts {MAX_MESSAGE_BYTES}"
            )
        params: dict[str, Any] = {
            "QueueUrl": await self.url(),
            "MessageBody": body.decode(),
            "MessageAttributes": attributes,
        }
        if self.fifo:
            params["MessageGroupId"] = group_id or message.task
            params["MessageDeduplicationId"] = deduplication_id or message.id
        response = await self._call("send_message", **params)
        return str(response["MessageId"])

    async def depth(self) -> dict[str, int]:
        """Approximate counts of waiting, in-flight and delayed messages."""
        response = await self._call(
            "get_queue_attributes",
            QueueUrl=await self.url(),
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )
        attributes = response.get("Attributes", {})
        return {
            "visible": int(attributes.get("ApproximateNumberOfMessages", 0)),
            "in_flight": int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
            "delayed": int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
        }

    async def _call(self, operation: str, **params: Any) -> Any:
        try:
            return await getattr(self._client.client, operation)(**params)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if "NonExistentQueue" in code or "QueueDoesNotExist" in code:
                # The queue may have been recreated under a new URL: resolve it again next time.
                self._url = None
            raise QueueUnavailable() from exc
        except BotoCoreError as exc:
            raise QueueUnavailable() from exc


def queue_name(settings: Settings, task: str) -> str:
    """The SQS queue a task is sent to."""
    names = {
        "resume-parse": settings.sqs_queue_resume_parse,
        "vector-index": settings.sqs_queue_vector_index,
        "email": settings.sqs_queue_email,
    }
    try:
        return names[task]
    except KeyError:
        raise ValueError(f"unknown queued task: {task!r}") from None


class SQSJobQueue:
    """Jobs as SQS messages, one queue per task (QUEUE_BACKEND=sqs)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.client = SQSClient(settings)

    async def start(self) -> None:
        await self.client.start()

    async def enqueue(
        self, task: str, payload: dict[str, Any], *, job_id: str | None = None
    ) -> str:
        """Send the job to its task's queue."""
        message = job_message(task, payload, job_id)
        queue = self.client.queue(queue_name(self._settings, task))
        await queue.send(message, path=task_path(task))
        return message.id

    async def depths(self) -> dict[str, dict[str, int] | None]:
        """Depth of every task's queue (a queue shared by tasks appears once)."""
        names = sorted({queue_name(self._settings, task) for task in QUEUED_TASKS})
        results = await asyncio.gather(
            *(self.client.queue(name).depth() for name in names), return_exceptions=True
        )
        return {
            name: None if isinstance(result, BaseException) else result
            for name, result in zip(names, results, strict=True)
        }

    async def close(self) -> None:
        await self.client.close()
