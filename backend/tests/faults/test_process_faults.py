"""Drills on the processes themselves: SIGTERM while requests are stuck on a lock, SIGHUP under
load, and a worker-tier process killed in the middle of its jobs.

The web drills check what every drill checks (tests/faults/rig.py); during a stop, connections
refused at the socket are expected (nothing listens any more), everything answered is not.
"""

import asyncio
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.main import create_app
from app.models import CandidateProfile, FailedJob, Notification, ProcessedJob
from tests.faults.rig import (
    Drill,
    FaultWindow,
    Population,
    Scenario,
    Traffic,
    assert_clean,
    check_ledger,
    finish,
    start_web,
    write_report,
)
from tests.support.apps import client_for
from tests.support.database import tables_locked
from tests.support.factories import auth, candidate_token
from tests.support.fake_upstream import FakeUpstream
from tests.support.gunicorn_server import GunicornServer, process_gone
from tests.support.moto_server import MotoServer
from tests.support.sqs_fixtures import sqs_settings
from tests.support.sqs_server import QueuePair
from tests.support.wait import wait_until, wait_until_sync
from tests.worker.processes import worker_env, worker_tier

pytestmark = pytest.mark.slow

# Waits for process starts, drains and job pipelines on a loaded machine.
SECONDS = 60.0


def test_sigterm_with_requests_stuck_on_a_lock(
    database_url: str, redis_url: str, population: Population, postgres_url: str
) -> None:
    # Stuck for good (lock timeout 60 s); uvicorn's drain deadline is 8 - 5 = 3 s.
    server = start_web(
        database_url,
        REDIS_URL=redis_url,
        DB_LOCK_TIMEOUT_MS="60000",
        DB_STATEMENT_TIMEOUT_MS="60000",
        GUNICORN_GRACEFUL_TIMEOUT="8",
    )
    traffic = Traffic(server.url, population, tag="sigterm-stuck")
    release = threading.Event()
    locked = threading.Event()

    def hold_lock() -> None:
        async def hold() -> None:
            async with tables_locked(postgres_url, "answers"):
                locked.set()
                await asyncio.to_thread(release.wait, SECONDS)

        asyncio.run(hold())

    holder = threading.Thread(target=hold_lock)
    window = FaultWindow()
    began = time.monotonic()
    try:
        traffic.start()
        traffic.wait_steady(began)
        with window:
            holder.start()
            locked.wait(SECONDS)
            # Every client thread reaches its answer within one cycle and stays there.
            wait_until_sync(
                lambda: traffic.in_flight("answer") == len(population.candidates),
                within=SECONDS,
                what="every client to be stuck on the lock",
            )
            terminated_at = time.monotonic()
            server.signal(signal.SIGTERM)
            exit_code = server.wait(timeout=SECONDS)
    finally:
        release.set()
        holder.join(timeout=SECONDS)
        traffic.stop()
        server.stop()
    drill_calls = traffic.snapshot()
    stuck = [c for c in drill_calls if c.op == "answer" and c.started < terminated_at and not c.ok]
    drill = Drill("sigterm-stuck-on-lock", drill_calls, window.started, window.ended)
    ledger = asyncio.run(check_ledger(postgres_url, drill.calls))
    drill.report(ledger)
    assert exit_code == 0
    # After the exit nothing listens: those connections are refused at the socket.
    assert_clean(drill, ledger, [server.log_text()], allow_refused_connections=True)
    # The stuck requests were answered in the shared shape, once the drain deadline came.
    assert {c.label for c in stuck} == {"503 shutting_down"}
    assert len(stuck) == len(population.candidates)
    assert server.messages().count("Application shutdown complete.") == 2


def test_sighup_under_load(web: GunicornServer, population: Population, postgres_url: str) -> None:
    def restart() -> None:
        old = web.booted_workers()
        web.signal(signal.SIGHUP)
        wait_until_sync(
            lambda: len(web.booted_workers()) >= len(old) + 2, within=SECONDS, what="new workers"
        )
        wait_until_sync(
            lambda: all(process_gone(pid) for pid in old),
            within=SECONDS,
            what="old workers to drain",
        )

    drill = Scenario(web, population, "sighup").run(restart)
    finish(drill, postgres_url, web)
    assert [c for c in drill.calls if not c.ok] == []


def test_rolling_restart_under_load(
    web: GunicornServer, population: Population, postgres_url: str
) -> None:
    def restart() -> None:
        finished = web.rolling_restart()
        assert finished.returncode == 0, finished.stderr

    drill = Scenario(web, population, "rolling-restart").run(restart)
    finish(drill, postgres_url, web)
    assert [c for c in drill.calls if not c.ok] == []


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()]


async def test_worker_process_killed_mid_job(
    tmp_path: Path,
    database_url: str,
    moto: MotoServer,
    queues: QueuePair,
    upstream: FakeUpstream,
) -> None:
    """Resume jobs are running (the AI summary takes a second) when the worker app's processes
    are SIGKILLed: gunicorn replaces them, sqsd sees the connections drop and the messages come
    back; every resume ends parsed exactly once (one processed job, one notification each)."""
    candidates = 12
    settings = sqs_settings(tmp_path, database_url, moto, queues)
    env = worker_env(
        settings,
        moto,
        queues,
        AI_BACKEND="gemini",
        GEMINI_API_KEY=upstream.api_key,
        GEMINI_BASE_URL=upstream.url,
    )
    upstream.set_mode("healthy", delay=1.0)
    web = create_app(settings)
    window = FaultWindow()
    tier = worker_tier(env, queues, tmp_path, workers=2, sqsd_args=("--visibility-timeout", "30"))
    with tier as processes:
        worker = processes[0]
        async with web.router.lifespan_context(web), client_for(web) as client:
            for _ in range(candidates):
                token = await candidate_token(client)
                files = {"file": ("resume.txt", b"Python, PostgreSQL, 6 years\n", "text/plain")}
                uploaded = await client.post(
                    "/api/profile/resume", files=files, headers=auth(token)
                )
                assert uploaded.status_code == 202, uploaded.text

            async def statuses() -> dict[str, int]:
                async with web.state.resources.database.sessionmaker() as session:
                    rows = await session.execute(
                        select(CandidateProfile.resume_status, func.count()).group_by(
                            CandidateProfile.resume_status
                        )
                    )
                    return {status: n for status, n in rows}

            async def processing() -> bool:
                return (await statuses()).get("processing", 0) >= 2

            await wait_until(processing, within=SECONDS, what="jobs to be running")
            with window:
                # Both processes: whichever holds the running jobs, they are cut off.
                for victim in _children(worker.process.pid):
                    os.kill(victim, signal.SIGKILL)

            async def all_parsed() -> bool:
                return (await statuses()).get("parsed", 0) == candidates

            await wait_until(all_parsed, within=SECONDS, what="every resume parsed", interval=0.2)
            recovered_at = time.monotonic()
            daemon_logs = [daemon.log() for daemon in processes[1:]]
            async with web.state.resources.database.sessionmaker() as session:
                parsed_notes = await session.execute(
                    select(Notification.user_id, func.count())
                    .where(Notification.kind == "resume_parsed")
                    .group_by(Notification.user_id)
                )
                per_user: dict[int, int] = {user: n for user, n in parsed_notes}
                jobs = await session.scalar(
                    select(func.count())
                    .select_from(ProcessedJob)
                    .where(ProcessedJob.task == "resume-parse")
                )
                failed = await session.scalar(select(func.count()).select_from(FailedJob))
    assert len(per_user) == candidates and set(per_user.values()) == {1}
    assert jobs == candidates
    assert failed == 0
    # The running deliveries really were cut off (sqsd logs each failed delivery).
    assert any(" failed: " in daemon_log for daemon_log in daemon_logs)
    write_report(
        {
            "drill": "worker-killed-mid-job",
            "jobs": candidates,
            "parsed_once": sum(1 for n in per_user.values() if n == 1),
            "recovery_seconds": round(recovered_at - window.ended, 2),
        }
    )
