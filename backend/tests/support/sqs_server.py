"""SQS queues on the test moto server, and worker-tier processes (uvicorn/gunicorn, local sqsd)."""

import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import httpx
from aiohttp import web

from tests.support.moto_server import CREDENTIALS
from tests.support.redis_server import free_port
from tests.support.wait import wait_until_sync

BACKEND_DIR = Path(__file__).resolve().parents[2]
REGION = "us-east-1"


def sqs_client(endpoint: str) -> Any:
    """A synchronous boto3 SQS client for test setup and inspection."""
    return boto3.client("sqs", endpoint_url=endpoint, region_name=REGION, **CREDENTIALS)


@dataclass(frozen=True)
class QueuePair:
    """A work queue and its dead-letter queue (redrive after ``max_receive_count`` receives)."""

    name: str
    url: str
    dlq_url: str


def create_queue_pair(
    endpoint: str, *, max_receive_count: int = 3, fifo: bool = False
) -> QueuePair:
    """A uniquely named queue with a DLQ, like the worker environment's."""
    client = sqs_client(endpoint)
    suffix = ".fifo" if fifo else ""
    name = f"jobs-{uuid.uuid4().hex[:12]}{suffix}"
    attributes = {"FifoQueue": "true"} if fifo else {}
    dlq_url = client.create_queue(QueueName=f"dlq-{name}", Attributes=attributes)["QueueUrl"]
    dlq_arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    redrive = json.dumps(
        {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}
    )
    url = client.create_queue(QueueName=name, Attributes={**attributes, "RedrivePolicy": redrive})[
        "QueueUrl"
    ]
    return QueuePair(name=name, url=url, dlq_url=dlq_url)


def drain(endpoint: str, url: str, wait_seconds: int = 1) -> list[dict[str, Any]]:
    """Receive (and delete) every message currently visible in a queue."""
    client = sqs_client(endpoint)
    messages: list[dict[str, Any]] = []
    while True:
        batch = client.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=wait_seconds,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not batch:
            return messages
        for message in batch:
            client.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        messages.extend(batch)


def service_env(overrides: Mapping[str, str]) -> dict[str, str]:
    """The environment for an app process: this one's, minus settings a test must choose."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "REDIS_URL", "AWS_ENDPOINT_URL", "QUEUE_BACKEND")
    }
    env.update(
        {
            "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
            "AWS_DEFAULT_REGION": REGION,
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(overrides)
    return env


class ManagedProcess:
    """A child process stopped with SIGTERM (then SIGKILL) at the end of a test."""

    def __init__(self, args: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            args, cwd=BACKEND_DIR, env=dict(env), stdout=self._log, stderr=subprocess.STDOUT
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()


def start_worker(
    env: Mapping[str, str], log_dir: Path, *, workers: int = 1
) -> tuple[ManagedProcess, str]:
    """The worker app under gunicorn with uvicorn workers (as on EB); returns it and its URL."""
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "gunicorn",
        "app.worker_app:app",
        "-k",
        "uvicorn_worker.UvicornWorker",
        "-w",
        str(workers),
        "-b",
        f"127.0.0.1:{port}",
        "--graceful-timeout",
        "10",
    ]
    process = ManagedProcess(args, env, log_dir / f"worker-{port}.log")
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health", process)
    return process, url


def start_sqsd(
    env: Mapping[str, str], log_dir: Path, queue_url: str, worker_url: str, *extra: str
) -> ManagedProcess:
    """``python -m devtools.local_sqsd`` polling ``queue_url`` for ``worker_url``."""
    args = [
        sys.executable,
        "-m",
        "devtools.local_sqsd",
        "--queue-url",
        queue_url,
        "--worker-url",
        worker_url,
        "--wait-time",
        "1",
        "--error-visibility-timeout",
        "0",
        *extra,
    ]
    return ManagedProcess(args, env, log_dir / f"sqsd-{uuid.uuid4().hex[:6]}.log")


def wait_http(url: str, process: ManagedProcess, timeout: float = 60.0) -> None:
    """Wait until ``url`` answers 200 (fails early if the process died)."""

    def answering() -> bool:
        if process.process.poll() is not None:
            raise RuntimeError(f"process exited:\n{process.log()[-3000:]}")
        try:
            return httpx.get(url, timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until_sync(answering, within=timeout, what=f"{url} to come up")


class FaultyProxy:
    """An HTTP proxy in front of the SQS server that counts requests by action and fails chosen
    actions a set number of times (throttling, 5xx), as AWS does now and then."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.calls: Counter[str] = Counter()
        self._faults: dict[str, list[tuple[int, str]]] = {}
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    def fail(self, action: str, status: int, code: str, times: int) -> None:
        """Answer the next ``times`` requests for ``action`` with ``status`` and error ``code``."""
        self._faults.setdefault(action, []).extend([(status, code)] * times)

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.Response:
        action = request.headers.get("X-Amz-Target", "").rsplit(".", 1)[-1]
        self.calls[action] += 1
        faults = self._faults.get(action)
        if faults:
            status, code = faults.pop(0)
            body = json.dumps({"__type": code, "message": "injected fault"})
            return web.Response(status=status, text=body, content_type="application/x-amz-json-1.0")
        assert self._session is not None
        headers = {
            name: value
            for name, value in request.headers.items()
            if name.lower() not in ("host", "content-length", "transfer-encoding")
        }
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            data=await request.read(),
            headers=headers,
        ) as response:
            return web.Response(
                status=response.status,
                body=await response.read(),
                content_type=response.content_type,
            )
