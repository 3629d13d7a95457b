"""The job queue: task names, the messages that travel through it, and the queue the web tier
enqueues into (chosen by QUEUE_BACKEND).

``sqs``: SQS (app.services.sqs_queue); the EB worker tier's sqsd POSTs each message to the worker
app. ``local`` (embedded default): :class:`LocalJobQueue` runs the same handlers in this process in
the background, with sqsd's semantics: a job is retried after a delay until it succeeds, is
rejected for good, or has been tried WORKER_MAX_RECEIVE_COUNT times (then it is recorded as failed,
the local stand-in for the dead-letter queue). Each run gets the worker tier's time budget
(WORKER_JOB_TIMEOUT_SECONDS, app.worker.delivery). Local jobs live in memory: a process that stops
drops the ones still waiting. They share the web process's event loop, so handlers keep
CPU-heavy work off it (resume parsing runs in a limited child process, app.domain.resume_sandbox).
"""

import asyncio
import enum
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import orjson

from app.config import Settings
from app.errors import ServiceUnavailable
from app.models.base import utcnow

logger = logging.getLogger(__name__)

# Tasks that travel through a queue; cron tasks arrive from the scheduler instead.
QUEUED_TASKS = ("resume-parse", "vector-index", "email")
CRON_TASKS = ("cleanup-sessions", "generate-reports")
# SQS's limit (body plus attributes); the local queue holds messages to it too.
MAX_MESSAGE_BYTES = 256 * 1024


def task_path(task: str) -> str:
    """The worker app's route for a task."""
    return f"/worker/{task}"


class QueueUnavailable(ServiceUnavailable):
    """The queue could not be reached or refused the message after retries (503 to a client)."""

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


class Outcome(enum.StrEnum):
    """What became of one delivery (sqsd deletes the message on 200: when acknowledged)."""

    DONE = "done"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"
    RETRY = "retry"
    # Cut off at WORKER_JOB_TIMEOUT_SECONDS and rolled back; retried like RETRY.
    TIMED_OUT = "timed_out"

    @property
    def acknowledged(self) -> bool:
        """Whether the message is done with (200); otherwise it is delivered again."""
        return self is not Outcome.RETRY and self is not Outcome.TIMED_OUT


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivery of a message to a worker route, as sqsd describes it in its headers."""

    # None: a cron delivery from a daemon that sends no X-Aws-Sqsd-Msgid (e.g. simple-sqsd).
    message_id: str | None
    body: bytes
    route_task: str
    receive_count: int = 1
    # Cron deliveries (empty body): the cron.yaml task name and its scheduled time.
    cron_task_name: str | None = None
    scheduled_at: str | None = None


Runner = Callable[[Delivery], Awaitable[Outcome]]


class JobQueue(Protocol):
    """Where the web tier puts background work."""

    async def enqueue(
        self, task: str, payload: dict[str, Any], *, job_id: str | None = None
    ) -> str:
        """Queue ``task``; returns the job id. Raises QueueUnavailable or MessageTooLarge."""
        ...

    async def depths(self) -> dict[str, dict[str, int] | None]:
        """Each queue's approximate depth (None where it could not be read)."""
        ...

    async def close(self) -> None: ...


def job_message(task: str, payload: dict[str, Any], job_id: str | None) -> JobMessage:
    """A message for a queued task (ValueError for an unknown one)."""
    if task not in QUEUED_TASKS:
        raise ValueError(f"unknown queued task: {task!r}")
    return JobMessage(task, payload) if job_id is None else JobMessage(task, payload, id=job_id)


class LocalJobQueue:
    """Jobs run in this process in the background, retried like sqsd would (QUEUE_BACKEND=local)."""

    def __init__(self, settings: Settings, runner: Runner) -> None:
        self._runner = runner
        self._max_receives = settings.worker_max_receive_count
        self._retry_delay = settings.local_queue_retry_delay_seconds
        self._slots = asyncio.Semaphore(settings.local_queue_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    async def enqueue(
        self, task: str, payload: dict[str, Any], *, job_id: str | None = None
    ) -> str:
        """Start the job in the background; the same size limit as SQS applies."""
        if self._closed:
            raise RuntimeError("the local job queue is closed")
        message = job_message(task, payload, job_id)
        body = message.encode()
        if len(body) > MAX_MESSAGE_BYTES:
            raise MessageTooLarge(f"{task} message is {len(body)} bytes")
        job = asyncio.create_task(self._deliver(message, body), name=f"job-{task}-{message.id}")
        self._tasks.add(job)
        job.add_done_callback(self._tasks.discard)
        return message.id

    async def _deliver(self, message: JobMessage, body: bytes) -> None:
        for receive_count in range(1, self._max_receives + 1):
            delivery = Delivery(
                message_id=message.id,
                body=body,
                route_task=message.task,
                receive_count=receive_count,
            )
            async with self._slots:
                try:
                    outcome = await self._runner(delivery)
                except Exception:
                    # The runner records its own failures; this guards the loop itself.
                    logger.exception("local job %s (%s) crashed", message.id, message.task)
                    outcome = Outcome.RETRY
            if outcome.acknowledged:
                return
            if receive_count < self._max_receives:
                await asyncio.sleep(self._retry_delay)
        logger.error(
            "local job %s (%s) failed %d times; giving up",
            message.id,
            message.task,
            self._max_receives,
        )

    async def depths(self) -> dict[str, dict[str, int] | None]:
        """Jobs started and not finished in this process."""
        return {"local": {"visible": 0, "in_flight": len(self._tasks), "delayed": 0}}

    async def close(self, drain_seconds: float = 10.0) -> None:
        """Let running jobs finish for up to ``drain_seconds``, then cancel the rest."""
        self._closed = True
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=drain_seconds)
        for job in pending:
            job.cancel()
        if pending:
            logger.warning("dropped %d unfinished local jobs at shutdown", len(pending))
            await asyncio.wait(pending)
