"""Cron deliveries without sqsd's message id (daemons such as simple-sqsd POST the task's URL
bare): accepted on cron routes, run once per schedule slot of cron.yaml (or per minute without
it); queued routes still need the message id."""

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy import select

from app.domain.reports import report_day
from app.models import DailyReport, FailedJob, ProcessedJob
from app.services.job_queue import QUEUED_TASKS, JobMessage
from app.worker.cron_slots import slot_of
from tests.conftest import make_settings
from tests.support.moto_server import MotoServer
from tests.support.sqs_fixtures import sqs_settings
from tests.support.sqs_server import QueuePair
from tests.worker.helpers import (
    count,
    loopback_client,
    post_cron,
    post_cron_without_sqsd_headers,
    running_worker_app,
)

SIX_HOURLY = "version: 1\ncron:\n  - name: cleanup\n    url: /worker/cleanup-sessions\n"
SIX_HOURLY += "    schedule: '0 */6 * * *'\n"
# Once a year: two deliveries a test makes seconds apart share its slot.
YEARLY = "version: 1\ncron:\n  - name: cleanup\n    url: /worker/cleanup-sessions\n"
YEARLY += "    schedule: '0 0 1 1 *'\n"


def cron_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cron.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("arrived", "slot"),
    [
        (datetime(2026, 5, 1, 13, 30, 12, tzinfo=UTC), datetime(2026, 5, 1, 12, 0, tzinfo=UTC)),
        # On the fire time itself: that slot, not the one before.
        (datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC), datetime(2026, 5, 1, 12, 0, tzinfo=UTC)),
        (datetime(2026, 5, 1, 11, 59, 59, tzinfo=UTC), datetime(2026, 5, 1, 6, 0, tzinfo=UTC)),
        # Across midnight, and an arrival time given in another zone: UTC decides.
        (datetime(2026, 5, 1, 0, 0, 30, tzinfo=UTC), datetime(2026, 5, 1, 0, 0, tzinfo=UTC)),
        (
            datetime(2026, 5, 1, 1, 30, tzinfo=timezone(timedelta(hours=2))),
            datetime(2026, 4, 30, 18, 0, tzinfo=UTC),
        ),
    ],
)
def test_a_delivery_belongs_to_the_latest_fire_time_at_or_before_it(
    tmp_path: Path, arrived: datetime, slot: datetime
) -> None:
    assert slot_of("cleanup-sessions", arrived, cron_file(tmp_path, SIX_HOURLY)) == slot


@pytest.mark.parametrize(
    "text",
    [
        None,  # no file at all
        "version: 1\ncron:\n  - {name: r, url: /worker/generate-reports, schedule: '0 2 * * *'}\n",
        "version: 1\ncron:\n  - {name: c, url: /worker/cleanup-sessions, schedule: 'not cron'}\n",
        # Six fields (seconds): not EB's format.
        "version: 1\ncron:\n  - {name: c, url: /worker/cleanup-sessions,"
        " schedule: '0 0 */6 * * *'}\n",
        "cron: [unclosed\n",
    ],
    ids=["absent", "task-missing", "invalid-schedule", "six-fields", "not-yaml"],
)
def test_without_a_usable_schedule_the_slot_is_the_minute_of_arrival(
    tmp_path: Path, text: str | None
) -> None:
    path = tmp_path / "cron.yaml"
    if text is not None:
        path.write_text(text)
    arrived = datetime(2026, 5, 1, 13, 30, 12, 345, tzinfo=UTC)
    assert slot_of("cleanup-sessions", arrived, path) == datetime(2026, 5, 1, 13, 30, tzinfo=UTC)


def test_the_default_cron_file_is_the_repository_cron_yaml(tmp_path: Path) -> None:
    """generate-reports runs at 02:00 UTC (cron.yaml at the bundle root)."""
    path = make_settings(tmp_path).worker_cron_file
    assert path == Path(__file__).resolve().parents[3] / "cron.yaml"
    arrived = datetime(2026, 5, 2, 1, 59, tzinfo=UTC)
    assert slot_of("generate-reports", arrived, path) == datetime(2026, 5, 1, 2, 0, tzinfo=UTC)


async def processed_row(app: FastAPI) -> ProcessedJob:
    async with app.state.resources.database.sessionmaker() as session:
        row: ProcessedJob = (await session.scalars(select(ProcessedJob))).one()
    return row


async def test_bare_cron_posts_run_once_per_slot_whichever_daemon_sends_them(
    tmp_path: Path, database_url: str, moto: MotoServer, queues: QueuePair
) -> None:
    path = cron_file(tmp_path, YEARLY)
    settings = sqs_settings(tmp_path, database_url, moto, queues, worker_cron_file=path)
    async with running_worker_app(settings) as app, loopback_client(app) as client:
        first = await post_cron_without_sqsd_headers(client, "cleanup-sessions")
        again = await post_cron_without_sqsd_headers(client, "cleanup-sessions")
        assert (first.status_code, first.json()["status"]) == (200, "done")
        assert (again.status_code, again.json()["status"]) == (200, "duplicate")
        slot = slot_of("cleanup-sessions", datetime.now(UTC), path)
        row = await processed_row(app)
        assert (row.key, row.task, row.message_id, row.status) == (
            f"cron:cleanup-sessions:{slot.isoformat()}",
            "cleanup-sessions",
            "",
            "done",
        )
        # EB's sqsd firing the same slot (message id, task name, scheduled time): the same run.
        eb = await post_cron(client, "cleanup-sessions", slot.strftime("%Y-%m-%dT%H:%M:%SZ"))
        assert (eb.status_code, eb.json()["status"]) == (200, "duplicate")
        # A delivery with sqsd's message id but no scheduled time belongs to the slot too.
        headers = {"X-Aws-Sqsd-Msgid": "cron-message-1", "X-Aws-Sqsd-Taskname": "cleanup"}
        with_id = await client.post("/worker/cleanup-sessions", content=b"", headers=headers)
        assert (with_id.status_code, with_id.json()["status"]) == (200, "duplicate")
        assert await count(app, ProcessedJob) == 1


async def test_without_a_cron_file_a_bare_cron_post_runs_for_its_minute(
    tmp_path: Path, database_url: str, moto: MotoServer, queues: QueuePair
) -> None:
    path = tmp_path / "absent" / "cron.yaml"
    settings = sqs_settings(tmp_path, database_url, moto, queues, worker_cron_file=path)
    async with running_worker_app(settings) as app, loopback_client(app) as client:
        before = datetime.now(UTC).replace(second=0, microsecond=0)
        response = await post_cron_without_sqsd_headers(client, "cleanup-sessions")
        after = datetime.now(UTC)
        assert (response.status_code, response.json()["status"]) == (200, "done")
        key = (await processed_row(app)).key
        minute = datetime.fromisoformat(key.removeprefix("cron:cleanup-sessions:"))
        assert minute.second == 0 and before <= minute <= after


async def test_generate_reports_without_a_scheduled_time_reports_the_day_before_its_slot(
    worker_app: FastAPI, tmp_path: Path
) -> None:
    """The repository's cron.yaml: the slot is the latest 02:00 UTC, its report the day before."""
    path = make_settings(tmp_path).worker_cron_file
    async with loopback_client(worker_app) as client:
        slot_before = slot_of("generate-reports", datetime.now(UTC), path)
        response = await post_cron_without_sqsd_headers(client, "generate-reports")
        slot_after = slot_of("generate-reports", datetime.now(UTC), path)
    assert (response.status_code, response.json()["status"]) == (200, "done")
    key = (await processed_row(worker_app)).key
    slot = datetime.fromisoformat(key.removeprefix("cron:generate-reports:"))
    assert slot in (slot_before, slot_after)
    async with worker_app.state.resources.database.sessionmaker() as session:
        days = list(await session.scalars(select(DailyReport.report_date)))
    assert days == [report_day(slot)]


@pytest.mark.parametrize("task", QUEUED_TASKS)
async def test_queued_routes_still_need_a_message_id(task: str, worker_app: FastAPI) -> None:
    async with loopback_client(worker_app) as client:
        response = await client.post(
            f"/worker/{task}",
            content=JobMessage(task, {}).encode(),
            headers={"Content-Type": "application/json", "X-Aws-Sqsd-Taskname": task},
        )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "missing_message_id"
    assert await count(worker_app, ProcessedJob) == 0
    assert await count(worker_app, FailedJob) == 0
