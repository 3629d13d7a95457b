"""SQS producer: one aioboto3 client per process, queue URLs resolved once, JSON job messages.

A message body is ``{"task", "payload", "id", "enqueued_at"}``. Bodies stay small: files live in
storage and a message carries the storage key. Throttling, 5xx and connection errors are retried
by botocore's ``standard`` retry mode (exponential backoff with jitter, SQS_MAX_ATTEMPTS tries);
what still fails becomes :class:`QueueUnavailable` (503 to a web client).
"""

import asyncio
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aioboto3
import orjson
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from app.config import Settings
from app.errors import ServiceUnavailable
from app.models.base import utcnow

# SQS's limit counts the body plus every message attribute's name, type and value.
SQS_MAX_MESSAGE_BYTES = 256 * 1024
# EB's sqsd posts a message to the path in this attribute (cron tasks use it too).
PATH_ATTRIBUTE = "beanstalk.sqsd.path"


class QueueUnavailable(ServiceUnavailable):
    """The queue could not be reached or refused the message after retries."""

    code = "queue_unavailable"
    message = "Background processing is temporarily unavailable."


class MessageTooLarge(ValueError):
    """The encoded message exceeds SQS's size limit (put the data in storage instead)."""


class MalformedMessage(ValueError):
    """A body that is not a job message."""


@dataclass(frozen=True, slots=True)
class JobMessage:
    """One unit of background work as it travels through a queue."""

    task: str
    payload: dict[str, Any]
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    enqueued_at: datetime = field(default_factory=utcnow)

    def encode(self) -> bytes:
        """The JSON body."""
        return orjson.dumps(
            {
                "task": self.task,
                "payload": self.payload,
                "id": self.id,
                "enqueued_at": self.enqueued_at.isoformat(),
            }
        )

    @classmethod
    def decode(cls, body: bytes | str) -> "JobMessage":
        """Parse a body; MalformedMessage if it is not a job message."""
        try:
            data = orjson.loads(body)
            task, payload, job_id = data["task"], data["payload"], data["id"]
            enqueued_at = datetime.fromisoformat(data["enqueued_at"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise MalformedMessage("the body is not a job message") from exc
        if not (isinstance(task, str) and isinstance(payload, dict) and isinstance(job_id, str)):
            raise MalformedMessage("the body is not a job message")
        if not job_id or len(job_id) > 200:
            raise MalformedMessage("the job id is missing or too long")
        return cls(task=task, payload=payload, id=job_id, enqueued_at=enqueued_at)


def message_size(body: bytes, attributes: dict[str, dict[str, str]]) -> int:
    """The size SQS charges against its limit."""
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
        if size > SQS_MAX_MESSAGE_BYTES:
            raise MessageTooLarge(
                f"{message.task} message is {size} bytes; SQS accepts {SQS_MAX_MESSAGE_BYTES}"
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
