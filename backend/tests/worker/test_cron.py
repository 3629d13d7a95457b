"""cron.yaml: it parses, its schedules are UTC cron, each URL is a worker route; the leader."""

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app.models import ProcessedJob
from app.services.job_queue import CRON_TASKS
from app.worker_app import create_worker_app
from devtools.local_sqsd import CRON_BODY, CronTask, LocalSqsd, SqsdConfig, load_cron
from tests.conftest import make_settings
from tests.support.moto_server import MotoServer
from tests.support.sqs_server import QueuePair, sqs_client
from tests.worker.helpers import count

CRON_FILE = Path(__file__).resolve().parents[3] / "cron.yaml"


async def test_cron_yaml_parses_and_every_url_is_a_worker_route(tmp_path: Path) -> None:
    tasks = load_cron(CRON_FILE)
    assert {(task.name, task.url, task.schedule) for task in tasks} == {
        ("cleanup-sessions", "/worker/cleanup-sessions", "0 */6 * * *"),
        ("generate-reports", "/worker/generate-reports", "0 2 * * *"),
    }
    assert {f"/worker/{task}" for task in CRON_TASKS} == {task.url for task in tasks}
    # Each URL is a POST route of the worker app: it validates sqsd's headers (a 400 for a
    # receive count of 0, before any job runs), where an unknown path answers 404.
    app = create_worker_app(make_settings(tmp_path))
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 9))
    bad_count = {"X-Aws-Sqsd-Receive-Count": "0"}
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
        for task in tasks:
            response = await client.post(task.url, headers=bad_count)
            assert response.json()["error"]["code"] == "invalid_header", task.url
        assert (await client.post("/worker/no-such-task", headers=bad_count)).status_code == 404


def test_schedules_are_utc() -> None:
    cleanup = CronTask("cleanup-sessions", "/worker/cleanup-sessions", "0 */6 * * *")
    reports = CronTask("generate-reports", "/worker/generate-reports", "0 2 * * *")
    moment = datetime(2026, 5, 1, 13, 30, tzinfo=UTC)
    assert cleanup.next_after(moment) == datetime(2026, 5, 1, 18, 0, tzinfo=UTC)
    assert reports.next_after(moment) == datetime(2026, 5, 2, 2, 0, tzinfo=UTC)
    # Exactly on the schedule: the next one, not the same one again.
    assert reports.next_after(datetime(2026, 5, 2, 2, 0, tzinfo=UTC)).day == 3


@pytest.mark.parametrize(
    "text",
    [
        "cron: []\n",
        "version: 1\ncron: []\n",
        "version: 1\ncron:\n  - name: a\n    url: /x\n    schedule: 'not cron'\n",
        "version: 1\ncron:\n  - name: a\n    url: x\n    schedule: '* * * * *'\n",
        "version: 1\ncron:\n  - {name: a, url: /x, schedule: '* * * * *'}\n"
        "  - {name: a, url: /y, schedule: '* * * * *'}\n",
    ],
)
def test_invalid_cron_files_are_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "cron.yaml"
    path.write_text(text)
    with pytest.raises(ValueError):
        load_cron(path)


async def test_a_fired_cron_task_reaches_its_route_with_eb_headers_and_runs_once(
    worker_app: FastAPI, moto: MotoServer, queues: QueuePair
) -> None:
    """The leader queues the task; a daemon delivers it (empty body, task headers) to the
    worker app; firing the same schedule twice has no extra effect."""
    config = SqsdConfig(
        queue_url=queues.url, worker_url="http://worker", endpoint_url=moto.url, wait_time_seconds=1
    )
    task = CronTask("cleanup-sessions", "/worker/cleanup-sessions", "0 */6 * * *")
    scheduled = datetime(2026, 5, 1, 18, 0, tzinfo=UTC)
    # Deliveries go to the ASGI app (as a loopback client) instead of a socket.
    transport = httpx.ASGITransport(app=worker_app, client=("127.0.0.1", 9))
    async with LocalSqsd(config, transport) as daemon:
        await daemon.fire(task, scheduled)
        await daemon.fire(task, scheduled)  # a second leader, or a retried send
        messages = sqs_client(moto.url).receive_message(
            QueueUrl=queues.url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )["Messages"]
        assert [message["Body"] for message in messages] == [CRON_BODY, CRON_BODY]
        path, headers, body = daemon._request(messages[0])
        assert (path, body) == ("/worker/cleanup-sessions", b"")
        assert headers["X-Aws-Sqsd-Taskname"] == "cleanup-sessions"
        assert headers["X-Aws-Sqsd-Scheduled-At"] == "2026-05-01T18:00:00Z"
        assert headers["X-Aws-Sqsd-Sender-Id"]
        assert headers["User-Agent"].startswith("aws-sqsd/3.")
        results = await asyncio.gather(*(daemon.deliver(message) for message in messages))
    assert results == [True, True]
    assert await count(worker_app, ProcessedJob) == 1
