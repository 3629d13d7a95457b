"""The job queue the web tier enqueues into, chosen by QUEUE_BACKEND.

``sqs``: SQS through :mod:`app.services.sqs_queue`; the EB worker tier's sqsd POSTs each message
to the worker app. ``local`` (embedded default): the same handlers run in this process in the
background, with sqsd's semantics: a job is retried after a delay until it succeeds, is rejected
for good, or has been tried WORKER_MAX_RECEIVE_COUNT times (then it is recorded as failed, the
local stand-in for the dead-letter queue). Local jobs live in memory: a process that stops drops
the ones still waiting.
"""

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from fastapi import Depends, Request

from app.config import Settings
from app.services.sqs_queue import (
    SQS_MAX_MESSAGE_BYTES,
    JobMessage,
    MessageTooLarge,
    SQSClient,
)

logger = logging.getLogger(__name__)

# Tasks that travel through a queue; cron tasks arrive from the scheduler instead.
QUEUED_TASKS = ("resume-parse", "vector-index", "email")
CRON_TASKS = ("cleanup-sessions", "generate-reports")


def task_path(task: str) -> str:
    """The worker app's route for a task."""
    return f"/worker/{task}"


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


class Outcome(enum.StrEnum):
    """What became of one delivery (sqsd deletes the message on 200, i.e. all but RETRY)."""

    DONE = "done"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"
    RETRY = "retry"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivery of a message to a worker route, as sqsd describes it in its headers."""

    message_id: str
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


def _message(task: str, payload: dict[str, Any], job_id: str | None) -> JobMessage:
    if task not in QUEUED_TASKS:
        raise ValueError(f"unknown queued task: {task!r}")
    return JobMessage(task, payload) if job_id is None else JobMessage(task, payload, id=job_id)


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
        message = _message(task, payload, job_id)
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
        message = _message(task, payload, job_id)
        body = message.encode()
        if len(body) > SQS_MAX_MESSAGE_BYTES:
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
            if outcome is not Outcome.RETRY:
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


def get_job_queue(request: Request) -> JobQueue:
    """The app's job queue, created in the lifespan."""
    queue: JobQueue = request.app.state.jobs
    return queue


JobQueueDep = Annotated[JobQueue, Depends(get_job_queue)]
