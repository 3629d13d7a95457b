"""A local stand-in for Elastic Beanstalk's SQS daemon (sqsd), for local runs and tests.

    python -m devtools.local_sqsd --queue-url URL --worker-url http://127.0.0.1:8001 \\
        [--cron ../cron.yaml] [--concurrency 10] [--inactivity-timeout 299] ...

Like EB's daemon it long-polls one queue and POSTs each message body to the worker with EB's
headers (X-Aws-Sqsd-Msgid, -Queue, -First-Received-At, -Receive-Count, -Sent-At, -Path,
-Attr-<name>, User-Agent aws-sqsd/3.x). Exactly 200 deletes the message; any other status, a
connection error or no answer within the inactivity timeout leaves it to come back after the
error visibility timeout, and the queue's redrive policy moves it to the dead-letter queue.
The path is the message's ``beanstalk.sqsd.path`` attribute, else ``--http-path``.

With ``--cron`` this instance is the leader: at each ``cron.yaml`` schedule (UTC) it queues a
message carrying the task's name, scheduled time and path; whichever instance receives it POSTs
an empty body with X-Aws-Sqsd-Taskname, -Scheduled-At and -Sender-Id. Run one leader.
"""

import argparse
import asyncio
import logging
import signal
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aioboto3
import httpx
import yaml
from aiobotocore.config import AioConfig
from croniter import croniter

from app.config import get_settings
from app.services.sqs_queue import PATH_ATTRIBUTE

logger = logging.getLogger("devtools.local_sqsd")

USER_AGENT = "aws-sqsd/3.0.4"
TASK_NAME_ATTRIBUTE = "beanstalk.sqsd.task_name"
SCHEDULED_TIME_ATTRIBUTE = "beanstalk.sqsd.scheduled_time"
# EB queues this body for a periodic task; the worker receives an empty body instead.
CRON_BODY = "elasticbeanstalk scheduled job"


@dataclass(frozen=True, slots=True)
class CronTask:
    """One entry of cron.yaml."""

    name: str
    url: str
    schedule: str

    def next_after(self, moment: datetime) -> datetime:
        """The first scheduled time strictly after ``moment`` (UTC)."""
        following: datetime = croniter(self.schedule, moment.astimezone(UTC)).get_next(datetime)
        return following.astimezone(UTC)


def load_cron(path: Path) -> list[CronTask]:
    """Parse an EB cron.yaml (``version: 1``, ``cron: [{name, url, schedule}]``)."""
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict) or document.get("version") != 1:
        raise ValueError(f"{path}: expected 'version: 1'")
    entries = document.get("cron")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: expected a non-empty 'cron' list")
    tasks = []
    for entry in entries:
        name, url, schedule = entry.get("name"), entry.get("url"), entry.get("schedule")
        if not (isinstance(name, str) and isinstance(url, str) and isinstance(schedule, str)):
            raise ValueError(f"{path}: each task needs name, url and schedule")
        if not url.startswith("/") or not croniter.is_valid(schedule):
            raise ValueError(f"{path}: task {name!r} has an invalid url or schedule")
        tasks.append(CronTask(name=name, url=url, schedule=schedule))
    if len({task.name for task in tasks}) != len(tasks):
        raise ValueError(f"{path}: task names must be unique")
    return tasks


@dataclass(frozen=True, slots=True)
class SqsdConfig:
    queue_url: str
    worker_url: str
    http_path: str = "/"
    concurrency: int = 10
    wait_time_seconds: int = 20
    visibility_timeout: int = 300
    error_visibility_timeout: int = 2
    inactivity_timeout: float = 299.0
    mime_type: str = "application/json"
    cron: tuple[CronTask, ...] = ()
    endpoint_url: str | None = None
    region: str = "us-east-1"


def _iso_from_millis(value: str | None) -> str | None:
    if not value or not value.isdigit():
        return None
    moment = datetime.fromtimestamp(int(value) / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class LocalSqsd:
    """The daemon: a receive loop, a bounded set of deliveries, and the cron leader loop."""

    def __init__(
        self, config: SqsdConfig, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        """``transport`` replaces the HTTP connection to the worker (e.g. an ASGI app)."""
        self.config = config
        self._transport = transport
        self.queue_name = config.queue_url.rstrip("/").rsplit("/", 1)[-1]
        self._stack = AsyncExitStack()
        self._sqs: Any = None
        self._http: httpx.AsyncClient | None = None
        self._deliveries: set[asyncio.Task[bool]] = set()
        # Receipt handles of messages the worker acknowledged, deleted in batches.
        self._acknowledged: asyncio.Queue[str] = asyncio.Queue()

    async def __aenter__(self) -> "LocalSqsd":
        session = aioboto3.Session(region_name=self.config.region)
        aio_config = AioConfig(
            retries={"max_attempts": 5, "mode": "standard"},
            max_pool_connections=self.config.concurrency + 5,
            # Long polls hold the connection for up to wait_time_seconds.
            read_timeout=self.config.wait_time_seconds + 10,
        )
        self._sqs = await self._stack.enter_async_context(
            session.client("sqs", endpoint_url=self.config.endpoint_url, config=aio_config)
        )
        self._http = await self._stack.enter_async_context(
            httpx.AsyncClient(
                base_url=self.config.worker_url,
                transport=self._transport,
                # Idle connections are dropped before the server's keep-alive (uvicorn: 5 s)
                # closes them, so a POST never goes out on a connection being closed.
                limits=httpx.Limits(max_connections=self.config.concurrency, keepalive_expiry=2.0),
                timeout=httpx.Timeout(self.config.inactivity_timeout, connect=5.0),
            )
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver messages (and fire cron tasks, if any) until ``stop`` is set."""
        deleter = asyncio.create_task(self._delete_loop())
        loops = [asyncio.create_task(self._receive_loop(stop))]
        if self.config.cron:
            loops.append(asyncio.create_task(self._cron_loop(stop)))
        await stop.wait()
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        # In-flight deliveries finish (bounded by the inactivity timeout) and their deletes are
        # sent, so no acknowledged message comes back after a clean stop.
        if self._deliveries:
            await asyncio.wait(set(self._deliveries))
        await self._acknowledged.join()
        deleter.cancel()
        await asyncio.gather(deleter, return_exceptions=True)

    async def _receive_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            free = self.config.concurrency - len(self._deliveries)
            if free <= 0:
                await asyncio.wait(set(self._deliveries), return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                response = await self._sqs.receive_message(
                    QueueUrl=self.config.queue_url,
                    MaxNumberOfMessages=min(10, free),
                    WaitTimeSeconds=self.config.wait_time_seconds,
                    VisibilityTimeout=self.config.visibility_timeout,
                    MessageSystemAttributeNames=["All"],
                    MessageAttributeNames=["All"],
                )
            except Exception:
                # SQS or connection trouble: keep polling (EB's daemon does the same).
                logger.exception("receive from %s failed; retrying in 1 s", self.queue_name)
                await asyncio.sleep(1.0)
                continue
            for message in response.get("Messages", []):
                delivery = asyncio.create_task(self.deliver(message))
                self._deliveries.add(delivery)
                delivery.add_done_callback(self._deliveries.discard)

    def _request(self, message: dict[str, Any]) -> tuple[str, dict[str, str], bytes]:
        """The path, headers and body EB's sqsd would send for ``message``."""
        system = message.get("Attributes", {})
        attributes = {
            name: value["StringValue"]
            for name, value in message.get("MessageAttributes", {}).items()
            if "StringValue" in value
        }
        path = attributes.get(PATH_ATTRIBUTE) or self.config.http_path
        headers = {
            "User-Agent": USER_AGENT,
            "Content-Type": self.config.mime_type,
            "X-Aws-Sqsd-Msgid": message["MessageId"],
            "X-Aws-Sqsd-Queue": self.queue_name,
            "X-Aws-Sqsd-Receive-Count": system.get("ApproximateReceiveCount", "1"),
            "X-Aws-Sqsd-Path": path,
        }
        for header, attribute in (
            ("X-Aws-Sqsd-First-Received-At", "ApproximateFirstReceiveTimestamp"),
            ("X-Aws-Sqsd-Sent-At", "SentTimestamp"),
        ):
            value = _iso_from_millis(system.get(attribute))
            if value is not None:
                headers[header] = value
        task_name = attributes.get(TASK_NAME_ATTRIBUTE)
        if task_name is not None:
            headers["X-Aws-Sqsd-Taskname"] = task_name
            headers["X-Aws-Sqsd-Scheduled-At"] = attributes.get(SCHEDULED_TIME_ATTRIBUTE, "")
            headers["X-Aws-Sqsd-Sender-Id"] = system.get("SenderId", "")
            return path, headers, b""
        for name, value in attributes.items():
            if not name.startswith("beanstalk."):
                headers[f"X-Aws-Sqsd-Attr-{name}"] = value
        return path, headers, message.get("Body", "").encode()

    async def deliver(self, message: dict[str, Any]) -> bool:
        """POST one message; delete it on 200, else make it visible after the error timeout."""
        assert self._http is not None
        path, headers, body = self._request(message)
        try:
            response = await self._http.post(path, content=body, headers=headers)
            done = response.status_code == 200
            if not done:
                status = response.status_code
                logger.warning("%s %s answered %d", message["MessageId"], path, status)
        except httpx.HTTPError as exc:
            logger.warning("%s %s failed: %s", message["MessageId"], path, type(exc).__name__)
            done = False
        try:
            if done:
                self._acknowledged.put_nowait(message["ReceiptHandle"])
            else:
                await self._sqs.change_message_visibility(
                    QueueUrl=self.config.queue_url,
                    ReceiptHandle=message["ReceiptHandle"],
                    VisibilityTimeout=self.config.error_visibility_timeout,
                )
        except Exception:
            # The message comes back after its visibility timeout instead.
            logger.exception("could not release message %s", message["MessageId"])
        return done

    async def _delete_loop(self) -> None:
        """Delete acknowledged messages, up to 10 per request (whatever is waiting: no delay)."""
        while True:
            handles = [await self._acknowledged.get()]
            while len(handles) < 10 and not self._acknowledged.empty():
                handles.append(self._acknowledged.get_nowait())
            try:
                response = await self._sqs.delete_message_batch(
                    QueueUrl=self.config.queue_url,
                    Entries=[
                        {"Id": str(index), "ReceiptHandle": handle}
                        for index, handle in enumerate(handles)
                    ],
                )
                if response.get("Failed"):
                    logger.warning("%d deletes failed", len(response["Failed"]))
            except Exception:
                # Whatever went wrong (SQS or the connection), the loop must survive it:
                # undeleted messages come back after their visibility timeout, and handlers
                # are idempotent, so the cost is a duplicate delivery.
                logger.exception("could not delete %d messages", len(handles))
            finally:
                for _ in handles:
                    self._acknowledged.task_done()

    async def fire(self, task: CronTask, scheduled_at: datetime) -> None:
        """Queue one run of a cron task (what EB's leader does at the scheduled time)."""
        attributes = {
            TASK_NAME_ATTRIBUTE: task.name,
            SCHEDULED_TIME_ATTRIBUTE: scheduled_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            PATH_ATTRIBUTE: task.url,
        }
        await self._sqs.send_message(
            QueueUrl=self.config.queue_url,
            MessageBody=CRON_BODY,
            MessageAttributes={
                name: {"DataType": "String", "StringValue": value}
                for name, value in attributes.items()
            },
        )
        logger.info("queued cron task %s for %s", task.name, attributes[SCHEDULED_TIME_ATTRIBUTE])

    async def _cron_loop(self, stop: asyncio.Event) -> None:
        now = datetime.now(UTC)
        upcoming = {task.name: task.next_after(now) for task in self.config.cron}
        tasks = {task.name: task for task in self.config.cron}
        while not stop.is_set():
            name = min(upcoming, key=lambda key: upcoming[key])
            delay = (upcoming[name] - datetime.now(UTC)).total_seconds()
            if delay > 0:
                # Wake at least every minute so clock jumps are noticed.
                await asyncio.sleep(min(delay, 60.0))
                continue
            try:
                await self.fire(tasks[name], upcoming[name])
            except Exception:
                logger.exception("could not queue cron task %s; retrying", name)
                await asyncio.sleep(5.0)
                continue
            upcoming[name] = tasks[name].next_after(upcoming[name])


def parse_args(argv: Sequence[str] | None = None) -> SqsdConfig:
    """The daemon's configuration from the command line (AWS endpoint and region default to
    the app's settings: AWS_ENDPOINT_URL, AWS_REGION)."""
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m devtools.local_sqsd", description=__doc__)
    parser.add_argument("--queue-url", required=True)
    parser.add_argument("--worker-url", default="http://127.0.0.1:80")
    parser.add_argument("--http-path", default="/")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--wait-time", type=int, default=20, choices=range(0, 21))
    parser.add_argument("--visibility-timeout", type=int, default=300)
    parser.add_argument("--error-visibility-timeout", type=int, default=2)
    parser.add_argument("--inactivity-timeout", type=float, default=299.0)
    parser.add_argument("--mime-type", default="application/json")
    parser.add_argument("--cron", type=Path, help="cron.yaml; makes this instance the leader")
    parser.add_argument("--endpoint-url", default=settings.aws_endpoint_url)
    parser.add_argument("--region", default=settings.aws_region)
    args = parser.parse_args(argv)
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    return SqsdConfig(
        queue_url=args.queue_url,
        worker_url=args.worker_url,
        http_path=args.http_path,
        concurrency=args.concurrency,
        wait_time_seconds=args.wait_time,
        visibility_timeout=args.visibility_timeout,
        error_visibility_timeout=args.error_visibility_timeout,
        inactivity_timeout=args.inactivity_timeout,
        mime_type=args.mime_type,
        cron=tuple(load_cron(args.cron)) if args.cron else (),
        endpoint_url=args.endpoint_url,
        region=args.region,
    )


async def _main(config: SqsdConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with LocalSqsd(config) as daemon:
        logger.info("polling %s for %s", daemon.queue_name, config.worker_url)
        await daemon.run(stop)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # One line per POST would drown the daemon's own messages.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    asyncio.run(_main(parse_args(argv)))


if __name__ == "__main__":
    main()
