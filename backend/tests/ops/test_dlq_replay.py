"""`python -m ops.dlq_replay` as a real process against the moto SQS server and Postgres: jobs
back on their queue intact, nothing sent twice, the ledger after a crash, the dry run, limits,
failures and, with the worker tier running, one run of a job queued twice by a crash."""

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from app.services.job_queue import JobMessage, task_path
from app.services.sqs_queue import PATH_ATTRIBUTE, SQSJobQueue
from tests.support.database import BACKEND_DIR, asyncpg_dsn, create_database, drop_database
from tests.support.moto_server import MotoServer
from tests.support.sqs_fixtures import sqs_settings
from tests.support.sqs_server import (
    FaultyProxy,
    QueuePair,
    create_queue_pair,
    drain,
    service_env,
    sqs_client,
)
from tests.support.wait import LOADED_MACHINE_MARGIN, wait_until, wait_until_sync
from tests.worker.processes import worker_env, worker_tier

# Interpreter start and imports, a few SQS and database round trips, one empty 1 s long poll
# per dead-letter queue; on a loaded 2-core machine.
RUN_SECONDS = 60.0
EMAIL = {"to": "candidate@example.com", "subject": "Interview", "body": "See you at 10."}


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str


def run_replay(env: dict[str, str], *args: str) -> Result:
    """Run the command to completion (fails the test if it hangs)."""
    completed = subprocess.run(
        [sys.executable, "-m", "ops.dlq_replay", "--wait-time", "1", *args],
        cwd=BACKEND_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_SECONDS + LOADED_MACHINE_MARGIN,
    )
    return Result(completed.returncode, completed.stdout, completed.stderr)


def replay_env(database_url: str, endpoint: str, queues: QueuePair, **extra: str) -> dict[str, str]:
    """The command's environment: the app's settings for this database and these queues."""
    return service_env(
        {
            "ENVIRONMENT": "development",
            "DATABASE_URL": database_url,
            "AWS_ENDPOINT_URL": endpoint,
            "SQS_QUEUE_RESUME_PARSE": queues.name,
            "SQS_QUEUE_VECTOR_INDEX": queues.name,
            "SQS_QUEUE_EMAIL": queues.name,
            "SQS_MAX_ATTEMPTS": "2",
            **extra,
        }
    )


def job_attributes(task: str) -> dict[str, dict[str, Any]]:
    """The attributes app/services/sqs_queue.py sends with a job."""
    return {PATH_ATTRIBUTE: {"DataType": "String", "StringValue": task_path(task)}}


def send(endpoint: str, url: str, body: str, attributes: dict[str, dict[str, Any]]) -> str:
    """Send one message straight to a queue; its message id."""
    response = sqs_client(endpoint).send_message(
        QueueUrl=url, MessageBody=body, MessageAttributes=attributes
    )
    return str(response["MessageId"])


def dead_letter_job(endpoint: str, queues: QueuePair, task: str, payload: dict[str, Any]) -> str:
    """A job message put straight into the DLQ as the app would have sent it; its DLQ id."""
    body = JobMessage(task, payload).encode().decode()
    return send(endpoint, queues.dlq_url, body, job_attributes(task))


def depth(endpoint: str, url: str) -> tuple[int, int]:
    """Visible and in-flight messages of a queue."""
    attributes = sqs_client(endpoint).get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )


def fail_until_dead_lettered(endpoint: str, queues: QueuePair, count: int) -> None:
    """Receive every message of the work queue without deleting it until SQS has moved
    ``count`` of them to the DLQ (past the redrive policy's maxReceiveCount)."""
    client = sqs_client(endpoint)

    def moved() -> bool:
        client.receive_message(QueueUrl=queues.url, MaxNumberOfMessages=10, VisibilityTimeout=0)
        return depth(endpoint, queues.dlq_url) == (count, 0)

    wait_until_sync(moved, within=30, what=f"{count} messages to reach the dead-letter queue")


def peek(endpoint: str, url: str, count: int) -> dict[str, dict[str, Any]]:
    """``count`` messages of a queue by id, left in it: received (hidden meanwhile, so each
    receive brings new ones), then made visible again."""
    client = sqs_client(endpoint)
    seen: dict[str, dict[str, Any]] = {}

    def all_seen() -> bool:
        for message in client.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=60,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        ).get("Messages", []):
            seen[message["MessageId"]] = message
        return len(seen) == count

    wait_until_sync(all_seen, within=10, what=f"{count} messages in {url}")
    handles = [message["ReceiptHandle"] for message in seen.values()]
    for start in range(0, len(handles), 10):
        client.change_message_visibility_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(index), "ReceiptHandle": handle, "VisibilityTimeout": 0}
                for index, handle in enumerate(handles[start : start + 10])
            ],
        )
    return seen


async def ledger_rows(postgres_url: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(asyncpg_dsn(postgres_url))
    try:
        rows: list[asyncpg.Record] = await connection.fetch("SELECT * FROM dlq_replays ORDER BY id")
        return rows
    finally:
        await connection.close()


async def execute(postgres_url: str, statement: str, *args: Any) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(postgres_url))
    try:
        await connection.execute(statement, *args)
    finally:
        await connection.close()


async def record_replayed(postgres_url: str, dlq_message_id: str, queues: QueuePair) -> None:
    """The ledger row a run writes after sending a message (step 3)."""
    await execute(
        postgres_url,
        "INSERT INTO dlq_replays (dlq_message_id, dead_letter_queue, source_queue,"
        " replayed_message_id, job_key, replayed_at) VALUES ($1, $2, $3, $4, NULL, now())",
        dlq_message_id,
        f"dlq-{queues.name}",
        queues.name,
        str(uuid.uuid4()),
    )


async def test_dead_lettered_jobs_go_back_intact_and_a_second_run_sends_nothing(
    tmp_path: Path,
    database_url: str,
    postgres_url: str,
    moto: MotoServer,
    queues: QueuePair,
) -> None:
    # Twelve jobs (more than one batch of 10) sent by the app's own producer, then failed
    # past the redrive policy's maxReceiveCount.
    producer = SQSJobQueue(sqs_settings(tmp_path, database_url, moto, queues))
    await producer.start()
    try:
        jobs = {
            await producer.enqueue(task, {**EMAIL, "n": n}): task
            for n in range(4)
            for task in ("resume-parse", "vector-index", "email")
        }
    finally:
        await producer.close()
    fail_until_dead_lettered(moto.url, queues, 12)
    dead = peek(moto.url, queues.dlq_url, 12)
    env = replay_env(database_url, moto.url, queues)

    first = await asyncio.to_thread(run_replay, env, "--queue", "all")

    assert first.code == 0, first.stderr
    assert "summary: replayed 12, skipped (already replayed) 0, failed 0" in first.stdout
    assert depth(moto.url, queues.dlq_url) == (0, 0)
    rows = await ledger_rows(postgres_url)
    assert {row["dlq_message_id"] for row in rows} == set(dead)
    assert {row["job_key"] for row in rows} == {f"job:{job_id}" for job_id in jobs}
    assert {row["source_queue"] for row in rows} == {queues.name}

    second = await asyncio.to_thread(run_replay, env, "--queue", "email")

    assert second.code == 0, second.stderr
    assert "summary: replayed 0, skipped (already replayed) 0, failed 0" in second.stdout
    back = drain(moto.url, queues.url)
    # Each job once, its body and attributes as the app sent them (sqsd routes on the path).
    assert sorted(message["Body"] for message in back) == sorted(
        message["Body"] for message in dead.values()
    )
    for message in back:
        job = orjson.loads(message["Body"])
        assert message["MessageAttributes"] == {
            PATH_ATTRIBUTE: {"StringValue": f"/worker/{jobs[job['id']]}", "DataType": "String"}
        }
    assert {row["replayed_message_id"] for row in rows} == {m["MessageId"] for m in back}


async def test_every_attribute_survives_and_the_dlq_can_be_named(
    database_url: str, moto: MotoServer, queues: QueuePair
) -> None:
    attributes: dict[str, dict[str, Any]] = {
        **job_attributes("email"),
        "trace": {"DataType": "String", "StringValue": "abc-123"},
        "attempt": {"DataType": "Number", "StringValue": "3"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01\xfe"},
    }
    body = JobMessage("email", EMAIL).encode().decode()
    send(moto.url, queues.dlq_url, body, attributes)
    env = replay_env(database_url, moto.url, queues)

    result = await asyncio.to_thread(
        run_replay, env, "--queue", queues.url, "--dlq", f"dlq-{queues.name}"
    )

    assert result.code == 0, result.stderr
    [message] = drain(moto.url, queues.url)
    assert message["Body"] == body
    assert message["MessageAttributes"] == attributes
    assert depth(moto.url, queues.dlq_url) == (0, 0)


async def test_a_message_already_in_the_ledger_is_only_deleted(
    database_url: str, postgres_url: str, moto: MotoServer, queues: QueuePair
) -> None:
    # A run sent and recorded `sent_before`, then died before deleting it from the DLQ.
    sent_before = dead_letter_job(moto.url, queues, "email", EMAIL)
    await record_replayed(postgres_url, sent_before, queues)
    waiting = dead_letter_job(moto.url, queues, "vector-index", {"candidate_id": 7})
    env = replay_env(database_url, moto.url, queues)

    result = await asyncio.to_thread(run_replay, env, "--queue", "vector-index")

    assert result.code == 0, result.stderr
    assert "summary: replayed 1, skipped (already replayed) 1, failed 0" in result.stdout
    assert f"already replayed  {sent_before}" in result.stdout
    [message] = drain(moto.url, queues.url)
    assert orjson.loads(message["Body"])["task"] == "vector-index"
    assert depth(moto.url, queues.dlq_url) == (0, 0)
    rows = await ledger_rows(postgres_url)
    assert [row["dlq_message_id"] for row in rows] == [sent_before, waiting]


async def test_a_dry_run_lists_the_messages_and_changes_nothing(
    database_url: str, postgres_url: str, moto: MotoServer, queues: QueuePair
) -> None:
    failing = JobMessage("resume-parse", {"storage_key": "resumes/1.pdf"})
    failing_id = send(
        moto.url, queues.dlq_url, failing.encode().decode(), job_attributes("resume-parse")
    )
    # The worker recorded two failures of that job; the listing shows the first.
    first_failure = datetime.now(UTC) - timedelta(minutes=5)
    for reason, receives in (("failed on receive 3: DatabaseUnavailable", 3), ("later", 6)):
        await execute(
            postgres_url,
            "INSERT INTO failed_jobs (key, task, message_id, reason, body, receive_count,"
            " dead_lettered, failed_at) VALUES ($1, 'resume-parse', $2, $3, '', $4, true, $5)",
            f"job:{failing.id}",
            failing_id,
            reason,
            receives,
            first_failure + timedelta(minutes=receives),
        )
    replayed_id = dead_letter_job(moto.url, queues, "email", EMAIL)
    await record_replayed(postgres_url, replayed_id, queues)
    cron_id = send(
        moto.url,
        queues.dlq_url,
        "elasticbeanstalk scheduled job",
        {
            "beanstalk.sqsd.task_name": {"DataType": "String", "StringValue": "cleanup-sessions"},
            PATH_ATTRIBUTE: {"DataType": "String", "StringValue": "/worker/cleanup-sessions"},
        },
    )
    env = replay_env(database_url, moto.url, queues)

    result = await asyncio.to_thread(run_replay, env, "--queue", "all", "--dry-run")

    assert result.code == 0, result.stderr
    lines = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line}
    assert lines[failing_id][1:3] == ["resume-parse", failing.id]
    assert lines[failing_id][4:] == [
        "replay",
        "failed",
        "on",
        "receive",
        "3:",
        "DatabaseUnavailable",
    ]
    assert lines[failing_id][3] == "1"  # this listing's receive
    assert lines[replayed_id][4:7] == ["delete", "only", "-"]
    assert lines[cron_id][1:3] == ["cleanup-sessions", "-"]
    assert lines[cron_id][4:] == ["replay", "-"]
    assert "dry run: 3 messages listed, would replay 2, would only delete 1" in result.stdout
    # Nothing sent, deleted or recorded; the messages are visible again at once.
    assert depth(moto.url, queues.dlq_url) == (3, 0)
    assert depth(moto.url, queues.url) == (0, 0)
    assert [row["dlq_message_id"] for row in await ledger_rows(postgres_url)] == [replayed_id]


async def test_max_limits_the_messages_taken(
    database_url: str, moto: MotoServer, queues: QueuePair
) -> None:
    for n in range(5):
        dead_letter_job(moto.url, queues, "email", {**EMAIL, "n": n})
    env = replay_env(database_url, moto.url, queues)

    result = await asyncio.to_thread(run_replay, env, "--queue", "email", "--max", "2")

    assert result.code == 0, result.stderr
    assert "summary: replayed 2, skipped (already replayed) 0, failed 0" in result.stdout
    assert depth(moto.url, queues.url) == (2, 0)
    assert depth(moto.url, queues.dlq_url) == (3, 0)


async def test_a_fifo_queue_gets_its_messages_back_in_their_group(
    tmp_path: Path, database_url: str, moto: MotoServer
) -> None:
    fifo = create_queue_pair(moto.url, fifo=True)
    producer = SQSJobQueue(sqs_settings(tmp_path, database_url, moto, fifo))
    await producer.start()
    try:
        job_id = await producer.enqueue("email", EMAIL)
    finally:
        await producer.close()
    fail_until_dead_lettered(moto.url, fifo, 1)
    env = replay_env(database_url, moto.url, fifo)

    result = await asyncio.to_thread(run_replay, env, "--queue", "email")

    assert result.code == 0, result.stderr
    [message] = drain(moto.url, fifo.url)
    assert orjson.loads(message["Body"])["id"] == job_id
    assert message["Attributes"]["MessageGroupId"] == "email"
    assert message["MessageAttributes"][PATH_ATTRIBUTE]["StringValue"] == "/worker/email"
    assert depth(moto.url, fifo.dlq_url) == (0, 0)


@pytest.fixture
async def proxy(moto: MotoServer) -> AsyncIterator[FaultyProxy]:
    server = FaultyProxy(moto.url)
    await server.start()
    yield server
    await server.stop()


async def test_a_failed_send_exits_non_zero_and_leaves_the_message_for_the_next_run(
    database_url: str, postgres_url: str, moto: MotoServer, queues: QueuePair, proxy: FaultyProxy
) -> None:
    dead_letter_job(moto.url, queues, "email", EMAIL)
    proxy.fail("SendMessageBatch", 500, "InternalError", 1)
    env = replay_env(database_url, proxy.url, queues, SQS_MAX_ATTEMPTS="1")

    failed = await asyncio.to_thread(
        run_replay, env, "--queue", "email", "--visibility-timeout", "1"
    )

    assert failed.code == 1
    assert "summary: replayed 0, skipped (already replayed) 0, failed 1" in failed.stdout
    assert "FAILED" in failed.stdout and "InternalError" in failed.stdout
    assert "dlq_replay: FAILED: 1 messages not replayed" in failed.stderr
    assert depth(moto.url, queues.url) == (0, 0)
    assert sum(depth(moto.url, queues.dlq_url)) == 1
    assert await ledger_rows(postgres_url) == []

    # Once its visibility timeout is over, the next run replays it.
    wait_until_sync(
        lambda: depth(moto.url, queues.dlq_url) == (1, 0), within=5, what="the message back"
    )
    retried = await asyncio.to_thread(run_replay, env, "--queue", "email")

    assert retried.code == 0, retried.stderr
    assert "summary: replayed 1" in retried.stdout
    assert depth(moto.url, queues.url) == (1, 0)


async def test_setup_problems_exit_2_before_touching_a_message(
    database_url: str, moto: MotoServer, queues: QueuePair
) -> None:
    lone = sqs_client(moto.url).create_queue(QueueName=f"lone-{uuid.uuid4().hex[:8]}")
    dead_letter_job(moto.url, queues, "email", EMAIL)

    no_dlq = await asyncio.to_thread(
        run_replay, replay_env(database_url, moto.url, queues), "--queue", lone["QueueUrl"]
    )
    unmigrated = await create_database("hp_ops_unmigrated")
    try:
        no_ledger = await asyncio.to_thread(
            run_replay,
            replay_env(unmigrated, moto.url, queues, USE_EXTERNAL_POOLER="false"),
            "--queue",
            "email",
        )
    finally:
        await drop_database(unmigrated)

    assert no_dlq.code == 2
    assert "has no RedrivePolicy" in no_dlq.stderr and "--dlq" in no_dlq.stderr
    assert no_ledger.code == 2
    assert "no dlq_replays table" in no_ledger.stderr
    assert depth(moto.url, queues.dlq_url) == (1, 0)


@pytest.mark.slow
async def test_a_run_stopped_between_send_and_record_queues_a_job_twice_that_runs_once(
    tmp_path: Path, database_url: str, postgres_url: str, moto: MotoServer, queues: QueuePair
) -> None:
    message = JobMessage("email", EMAIL)
    send(moto.url, queues.dlq_url, message.encode().decode(), job_attributes("email"))
    env = replay_env(database_url, moto.url, queues, DB_LOCK_TIMEOUT_MS="300")
    # Reads of the ledger go on, its writes wait: the run sends, then cannot record (step 3).
    holder = await asyncpg.connect(asyncpg_dsn(postgres_url))
    try:
        async with holder.transaction():
            await holder.execute("LOCK TABLE dlq_replays IN EXCLUSIVE MODE")
            stopped = await asyncio.to_thread(
                run_replay, env, "--queue", "email", "--visibility-timeout", "1"
            )
    finally:
        await holder.close()

    assert stopped.code == 1
    assert "STOPPED: could not write the replay ledger" in stopped.stderr
    assert depth(moto.url, queues.url) == (1, 0)
    assert await ledger_rows(postgres_url) == []
    # The next run sends it again (the ledger never heard of the first copy) and finishes.
    wait_until_sync(
        lambda: depth(moto.url, queues.dlq_url) == (1, 0), within=5, what="the message back"
    )
    again = await asyncio.to_thread(run_replay, env, "--queue", "email")

    assert again.code == 0, again.stderr
    assert "summary: replayed 1, skipped (already replayed) 0, failed 0" in again.stdout
    assert depth(moto.url, queues.url) == (2, 0)
    assert depth(moto.url, queues.dlq_url) == (0, 0)

    # The worker tier (gunicorn + sqsd) takes both copies; the job's effects happen once.
    settings = sqs_settings(tmp_path, database_url, moto, queues)
    with worker_tier(worker_env(settings, moto, queues), queues, tmp_path):

        async def both_delivered() -> bool:
            return await asyncio.to_thread(depth, moto.url, queues.url) == (0, 0)

        await wait_until(both_delivered, within=60, what="both copies delivered", interval=0.2)
    connection = await asyncpg.connect(asyncpg_dsn(postgres_url))
    try:
        processed = await connection.fetch("SELECT key, status FROM processed_jobs")
        outbox = await connection.fetchval(
            "SELECT count(*) FROM email_outbox WHERE job_id = $1", message.id
        )
    finally:
        await connection.close()
    assert [(row["key"], row["status"]) for row in processed] == [(f"job:{message.id}", "done")]
    assert outbox == 1
