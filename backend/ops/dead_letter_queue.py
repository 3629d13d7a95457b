"""SQS for ``ops.dlq_replay``: a source queue, its dead-letter queue, and moves between them.

One aiobotocore client configured like the app's (AWS_ENDPOINT_URL, AWS_REGION, botocore's
``standard`` retries with SQS_MAX_ATTEMPTS tries). Batch calls carry at most 10 entries (SQS's
limit for ReceiveMessage, SendMessageBatch, DeleteMessageBatch and
ChangeMessageVisibilityBatch), a send batch at most MAX_MESSAGE_BYTES in all, and every entry's
result is read on its own: a batch call can succeed for some entries and fail for others.
"""

import json
from collections.abc import Iterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import aioboto3
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from app.config import Settings
from app.services.job_queue import MAX_MESSAGE_BYTES, JobMessage, MalformedMessage
from app.services.sqs_queue import PATH_ATTRIBUTE

BATCH_LIMIT = 10
# Set by the EB leader on a cron.yaml message (the worker reads the task from it).
TASK_NAME_ATTRIBUTE = "beanstalk.sqsd.task_name"
_ROUTE_PREFIX = "/worker/"


class QueueError(Exception):
    """An SQS call failed after its retries, or a queue is not set up for a replay."""


def describe(exc: BaseException) -> str:
    """A short, single-line reason for an SQS failure (the error code and message)."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'ClientError')}: {error.get('Message', '')}".strip(": ")
    return f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True, slots=True)
class Route:
    """A source queue and the dead-letter queue whose messages go back to it."""

    source_name: str
    source_url: str
    dlq_name: str
    dlq_url: str

    @property
    def fifo(self) -> bool:
        return self.source_name.endswith(".fifo")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One message received from a dead-letter queue."""

    message_id: str
    receipt_handle: str
    body: str
    # The message attributes as SendMessage takes them (beanstalk.sqsd.path among them).
    attributes: dict[str, dict[str, Any]]
    # SQS counts receives across the source queue and the DLQ, this receive included.
    receive_count: int
    group_id: str | None
    # What the message carries, for the listing and the ledger ("?" when unknown).
    task: str
    job_id: str | None

    @property
    def job_key(self) -> str | None:
        """The worker's processed_jobs / failed_jobs key for the job, when it is a job."""
        return f"job:{self.job_id}" if self.job_id is not None else None

    @classmethod
    def from_sqs(cls, message: dict[str, Any]) -> "DeadLetter":
        """Read a ReceiveMessage entry (asked with all message and system attributes)."""
        body = str(message.get("Body", ""))
        attributes = {
            name: _sendable(value) for name, value in message.get("MessageAttributes", {}).items()
        }
        system = message.get("Attributes", {})
        task, job_id = _job_of(body, attributes)
        return cls(
            message_id=str(message["MessageId"]),
            receipt_handle=str(message["ReceiptHandle"]),
            body=body,
            attributes=attributes,
            receive_count=int(system.get("ApproximateReceiveCount", 0)),
            group_id=system.get("MessageGroupId"),
            task=task,
            job_id=job_id,
        )

    def size(self) -> int:
        """Bytes SQS counts against a message's and a batch's limit: body and attributes."""
        size = len(self.body.encode())
        for name, value in self.attributes.items():
            size += len(name.encode()) + len(str(value["DataType"]).encode())
            if "StringValue" in value:
                size += len(str(value["StringValue"]).encode())
            else:
                size += len(value.get("BinaryValue", b""))
        return size


def _sendable(value: dict[str, Any]) -> dict[str, Any]:
    """A received attribute value as SendMessage takes it (received ones may carry empty lists)."""
    keep = ("DataType", "StringValue", "BinaryValue")
    return {key: value[key] for key in keep if key in value}


def _job_of(body: str, attributes: dict[str, dict[str, Any]]) -> tuple[str, str | None]:
    """The task and job id a message carries: a job message's own, else its route's task."""
    try:
        message = JobMessage.decode(body)
    except MalformedMessage:
        for name in (TASK_NAME_ATTRIBUTE, PATH_ATTRIBUTE):
            value = attributes.get(name, {}).get("StringValue")
            if value:
                return str(value).removeprefix(_ROUTE_PREFIX), None
        return "?", None
    return message.task, message.id


def _batches(letters: Sequence[DeadLetter]) -> Iterator[list[DeadLetter]]:
    """At most BATCH_LIMIT letters and MAX_MESSAGE_BYTES per batch (always at least one)."""
    batch: list[DeadLetter] = []
    size = 0
    for letter in letters:
        if batch and (len(batch) == BATCH_LIMIT or size + letter.size() > MAX_MESSAGE_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(letter)
        size += letter.size()
    if batch:
        yield batch


class DeadLetterQueues:
    """The SQS calls of a replay, on one client (use as ``async with``)."""

    def __init__(self, settings: Settings, *, wait_seconds: int) -> None:
        self._settings = settings
        self._wait_seconds = wait_seconds
        self._stack = AsyncExitStack()
        self._client: Any = None

    async def __aenter__(self) -> "DeadLetterQueues":
        settings = self._settings
        config = AioConfig(
            connect_timeout=min(3.0, settings.sqs_timeout_seconds),
            # A long poll holds the request open for its wait time.
            read_timeout=settings.sqs_timeout_seconds + self._wait_seconds,
            retries={"total_max_attempts": settings.sqs_max_attempts, "mode": "standard"},
        )
        session = aioboto3.Session(region_name=settings.aws_region)
        self._client = await self._stack.enter_async_context(
            session.client("sqs", endpoint_url=settings.aws_endpoint_url, config=config)
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()

    async def _call(self, operation: str, what: str, **params: Any) -> Any:
        try:
            return await getattr(self._client, operation)(**params)
        except (ClientError, BotoCoreError) as exc:
            raise QueueError(f"{what}: {describe(exc)}") from exc

    async def _queue(self, name_or_url: str) -> tuple[str, str]:
        """The name and URL of a queue given by either."""
        if name_or_url.startswith(("https://", "http://")):
            return name_or_url.rstrip("/").rsplit("/", 1)[-1], name_or_url
        response = await self._call("get_queue_url", f"queue {name_or_url}", QueueName=name_or_url)
        return name_or_url, str(response["QueueUrl"])

    async def route(self, source: str, dlq: str | None = None) -> Route:
        """The source queue and its DLQ: ``dlq`` when given, else its RedrivePolicy's target."""
        source_name, source_url = await self._queue(source)
        if dlq is not None:
            dlq_name, dlq_url = await self._queue(dlq)
            return Route(source_name, source_url, dlq_name, dlq_url)
        response = await self._call(
            "get_queue_attributes",
            f"queue {source_name}",
            QueueUrl=source_url,
            AttributeNames=["RedrivePolicy"],
        )
        policy = response.get("Attributes", {}).get("RedrivePolicy")
        if not policy:
            raise QueueError(
                f"queue {source_name} has no RedrivePolicy (no dead-letter queue): "
                "name its dead-letter queue with --dlq"
            )
        arn = str(json.loads(policy)["deadLetterTargetArn"])
        # arn:aws:sqs:<region>:<account>:<name>
        parts = arn.split(":", 5)
        if len(parts) != 6 or parts[2] != "sqs":
            raise QueueError(f"queue {source_name}: unexpected deadLetterTargetArn {arn!r}")
        account, dlq_name = parts[4], parts[5]
        response = await self._call(
            "get_queue_url",
            f"dead-letter queue {dlq_name}",
            QueueName=dlq_name,
            QueueOwnerAWSAccountId=account,
        )
        return Route(source_name, source_url, dlq_name, str(response["QueueUrl"]))

    async def receive(self, route: Route, count: int, visibility_timeout: int) -> list[DeadLetter]:
        """Up to ``count`` (at most 10) messages of the DLQ, hidden from other consumers (a
        concurrent run too) for ``visibility_timeout`` seconds. Long polling, so an empty
        answer means the DLQ has no visible message."""
        response = await self._call(
            "receive_message",
            f"dead-letter queue {route.dlq_name}",
            QueueUrl=route.dlq_url,
            MaxNumberOfMessages=min(count, BATCH_LIMIT),
            WaitTimeSeconds=self._wait_seconds,
            VisibilityTimeout=visibility_timeout,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        )
        return [DeadLetter.from_sqs(message) for message in response.get("Messages", [])]

    async def send(
        self, route: Route, letters: Sequence[DeadLetter]
    ) -> tuple[dict[str, str], dict[str, str]]:
        """Send copies of ``letters`` (body and attributes) to the source queue.

        Returns the new message ids and the failure reasons, both by DLQ message id. On a FIFO
        queue a copy keeps its message group and is deduplicated on the DLQ message's id, so a
        copy sent again within SQS's 5-minute deduplication interval is not delivered twice.
        """
        sent: dict[str, str] = {}
        failed: dict[str, str] = {}
        for batch in _batches(letters):
            entries = []
            for index, letter in enumerate(batch):
                entry: dict[str, Any] = {
                    "Id": str(index),
                    "MessageBody": letter.body,
                    "MessageAttributes": letter.attributes,
                }
                if letter.group_id is not None:
                    entry["MessageGroupId"] = letter.group_id
                elif route.fifo:
                    entry["MessageGroupId"] = letter.task
                if route.fifo:
                    entry["MessageDeduplicationId"] = f"replay-{letter.message_id}"[:128]
                entries.append(entry)
            try:
                response = await self._call(
                    "send_message_batch",
                    f"queue {route.source_name}",
                    QueueUrl=route.source_url,
                    Entries=entries,
                )
            except QueueError as exc:
                failed.update((letter.message_id, str(exc)) for letter in batch)
                continue
            for result in response.get("Successful", []):
                sent[batch[int(result["Id"])].message_id] = str(result["MessageId"])
            for result in response.get("Failed", []):
                reason = f"{result.get('Code', 'Failed')}: {result.get('Message', '')}"
                failed[batch[int(result["Id"])].message_id] = reason.strip(": ")
        return sent, failed

    async def delete(self, route: Route, letters: Sequence[DeadLetter]) -> dict[str, str]:
        """Delete ``letters`` from the DLQ; the failure reasons by message id."""
        return await self._per_entry("delete_message_batch", route, letters)

    async def release(self, route: Route, letters: Sequence[DeadLetter]) -> dict[str, str]:
        """Make ``letters`` visible in the DLQ again at once; the failure reasons by id."""
        return await self._per_entry(
            "change_message_visibility_batch", route, letters, VisibilityTimeout=0
        )

    async def _per_entry(
        self, operation: str, route: Route, letters: Sequence[DeadLetter], **extra: Any
    ) -> dict[str, str]:
        """Run a receipt-handle batch operation (with ``extra`` in every entry) on ``letters``;
        the failure reasons by message id."""
        failed: dict[str, str] = {}
        for start in range(0, len(letters), BATCH_LIMIT):
            batch = letters[start : start + BATCH_LIMIT]
            entries = [
                {"Id": str(index), "ReceiptHandle": letter.receipt_handle, **extra}
                for index, letter in enumerate(batch)
            ]
            try:
                response = await self._call(
                    operation,
                    f"dead-letter queue {route.dlq_name}",
                    QueueUrl=route.dlq_url,
                    Entries=entries,
                )
            except QueueError as exc:
                failed.update((letter.message_id, str(exc)) for letter in batch)
                continue
            for result in response.get("Failed", []):
                reason = f"{result.get('Code', 'Failed')}: {result.get('Message', '')}"
                failed[batch[int(result["Id"])].message_id] = reason.strip(": ")
        return failed
