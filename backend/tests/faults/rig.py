"""The fault drills' rig: the web tier as Procfile.web runs it (gunicorn, 2 workers), steady mixed
traffic from client threads, and the checks every drill makes afterwards.

Traffic: one thread per seeded candidate, each cycling through hot reads (job listing, a job's
detail), an ordinary read (notifications), a test-taking write (answering one of its own
attempt's questions with a unique text) and an admin insert (a job with a unique title); drills
add resume uploads (the queue) or AI generation (the upstream). Every call is recorded with its
outcome and timing.

Checks: every answer is inside the error contract (2xx, or 429/503/504 with the shared JSON
error shape and Retry-After; never a 500, never a dropped connection); the write ledger (every
acknowledged write is in the database exactly once, no refused write is); the servers' log has
no traceback; and a summary row per drill (statuses, p99 during the fault, recovery time)
appended to $FAULT_DRILL_REPORT when set.
"""

import asyncio
import itertools
import json
import os
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy import update

from app.main import create_app
from app.models import Question
from tests.conftest import make_settings
from tests.support.apps import client_for
from tests.support.database import asyncpg_dsn
from tests.support.factories import admin_token, auth, create_job, create_test, register_candidate
from tests.support.gunicorn_server import GunicornServer
from tests.support.wait import wait_until_sync

WEB_APP = "app.main:app"
# No drill is about rate or concurrency limits: every tier far above what the drill's clients
# send (and the per-user concurrency limit, whose Redis-down share would refuse the admin token
# the client threads share).
UNLIMITED_TIERS = json.dumps(
    {
        tier: {"capacity": 1_000_000, "refill": 1_000_000}
        for tier in ("auth", "ai_heavy", "upload", "read", "write", "default")
    }
)
# Budgets short enough for a drill to see them expire in seconds.
WEB_ENV = {
    "CACHE_ENABLED": "true",
    "RATE_LIMIT_ENABLED": "true",
    "RATE_LIMIT_TIERS": UNLIMITED_TIERS,
    "CONCURRENCY_LIMIT_PER_USER": "1000",
    "PASSWORD_HASH_TIME_COST": "1",
    "PASSWORD_HASH_MEMORY_KIB": "1024",
    "DB_POOL_TIMEOUT_SECONDS": "3",
    "DB_LOCK_TIMEOUT_MS": "1000",
    "DB_STATEMENT_TIMEOUT_MS": "3000",
    "DB_READ_STATEMENT_TIMEOUT_MS": "1000",
    "LOG_LEVEL": "INFO",
}
# How long each drill's fault lasts: past the budgets it trips (1-3 s), short enough for CI.
FAULT_SECONDS = 4.0
# Pause of each client thread between its requests (6 threads: up to ~120 requests/s).
PACING_SECONDS = 0.05
# A request's client timeout: far beyond every server-side budget, so a timeout is a finding.
CLIENT_TIMEOUT = 60.0
RETRYABLE = (429, 503, 504)
RESUME = b"Jordan Rivers\nSkills: Python, PostgreSQL, FastAPI\n6 years of experience\n"


@dataclass(frozen=True)
class Candidate:
    user_id: int
    token: str
    attempt_id: int
    question_ids: list[int]


@dataclass(frozen=True)
class Population:
    """What the traffic needs: an admin, candidates with an open attempt each, some jobs."""

    admin_token: str
    candidates: list[Candidate]
    job_ids: list[int]


async def seed(tmp_path: Path, database_url: str, *, candidates: int = 6) -> Population:
    """Seed the database through an in-process app on the same database."""
    app = create_app(make_settings(tmp_path / "seed", database_url=database_url))
    async with app.router.lifespan_context(app):
        test, questions = await create_test(app, questions=4)
        async with app.state.resources.database.sessionmaker() as session:
            # Free-text questions: each answer is a unique text the ledger can find again
            # (a question with options only takes one of them).
            await session.execute(
                update(Question).where(Question.test_id == test.id).values(options=[])
            )
            await session.commit()
        jobs = [await create_job(app, title=f"Seeded job {n}") for n in range(5)]
        async with client_for(app) as client:
            admin = await admin_token(app, client)
            seeded = []
            for _ in range(candidates):
                registered = await register_candidate(client)
                token = registered["access_token"]
                started = await client.post(
                    "/api/tests/start", headers=auth(token), json={"test_id": test.id}
                )
                assert started.status_code == 200, started.text
                seeded.append(
                    Candidate(
                        user_id=int(registered["user"]["id"]),
                        token=token,
                        attempt_id=int(started.json()["attempt_id"]),
                        question_ids=[q.id for q in questions],
                    )
                )
    return Population(admin_token=admin, candidates=seeded, job_ids=[job.id for job in jobs])


def start_web(database_url: str, **env: str) -> GunicornServer:
    """The web app under gunicorn with the drills' settings (plus `env`), started."""
    server = GunicornServer(WEB_APP, database_url=database_url, env={**WEB_ENV, **env})
    server.start()
    return server


@dataclass(frozen=True)
class Call:
    """One request's outcome. `status` is None when no HTTP answer came (`error` names why)."""

    op: str
    key: str
    value: str
    status: int | None
    error: str | None
    violation: str | None
    started: float
    ended: float

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def refused(self) -> bool:
        """The server said the request did not happen (no answer, or a commit whose outcome
        the server could not learn, leaves it unknown)."""
        return self.status is not None and not self.ok and self.error != "commit_outcome_unknown"

    @property
    def label(self) -> str:
        if self.status is None:
            return str(self.error)
        return f"{self.status} {self.error}" if self.error else str(self.status)


def contract_violation(response: httpx.Response) -> str | None:
    """Why a response is outside the error contract, or None."""
    if response.is_success:
        return None
    if response.status_code not in RETRYABLE:
        return f"status {response.status_code}"
    try:
        error = response.json()["error"]
        if not (isinstance(error["code"], str) and isinstance(error["message"], str)):
            return "malformed error body"
    except (ValueError, KeyError, TypeError):
        return "no JSON error body"
    retry_after = response.headers.get("retry-after", "")
    if not retry_after.isdigit() or int(retry_after) < 1:
        return "no Retry-After"
    return None


def _error_code(response: httpx.Response) -> str | None:
    if response.is_success:
        return None
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return None


# The operations a traffic thread cycles through; drills add "upload" or "ai".
BASE_OPS = ("jobs", "job", "notifications", "answer", "create_job")


@dataclass
class Traffic:
    """Client threads sending the drill's mix until stopped; one new connection per request
    (as the instance's nginx does towards gunicorn)."""

    url: str
    population: Population
    tag: str
    ops: Sequence[str] = BASE_OPS
    calls: list[Call] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _in_flight: Counter[str] = field(default_factory=Counter)

    def start(self) -> None:
        for candidate in self.population.candidates:
            thread = threading.Thread(target=self._run, args=(candidate,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=CLIENT_TIMEOUT + 30)

    def snapshot(self) -> list[Call]:
        with self._lock:
            return list(self.calls)

    def in_flight(self, op: str) -> int:
        """Requests of `op` sent and not yet answered."""
        with self._lock:
            return self._in_flight[op]

    def successes_since(self, since: float, op: str | None = None) -> int:
        return sum(
            1
            for call in self.snapshot()
            if call.ok and call.started >= since and (op is None or call.op == op)
        )

    def wait_steady(self, since: float, each: int = 3, within: float = 30.0) -> None:
        """Wait until every operation succeeded `each` times among calls started after `since`."""
        wait_until_sync(
            lambda: all(self.successes_since(since, op) >= each for op in self.ops),
            within=within,
            what=f"every operation to succeed {each} times",
            interval=0.1,
        )

    def _run(self, candidate: Candidate) -> None:
        limits = httpx.Limits(max_keepalive_connections=0)
        sequence = itertools.count()
        with httpx.Client(base_url=self.url, timeout=CLIENT_TIMEOUT, limits=limits) as client:
            for op in itertools.cycle(self.ops):
                # Paced: a steady load, not a saturating one that would starve the suite's
                # other tests of CPU (the drills run beside them on 2 cores).
                if self._stop.wait(PACING_SECONDS):
                    return
                self._call(client, candidate, op, next(sequence))

    def _request(
        self, candidate: Candidate, op: str, n: int
    ) -> tuple[str, str, Callable[[httpx.Client], httpx.Response]]:
        """The ledger key, the value written and how to send one `op`."""
        user = auth(candidate.token)
        admin = auth(self.population.admin_token)
        if op == "jobs":
            # A few pages: some cache hits, some misses that reach the read pool.
            page = n % 4 + 1
            return "", "", lambda c: c.get("/api/jobs", params={"page": page, "page_size": 2})
        if op == "job":
            job_id = self.population.job_ids[n % len(self.population.job_ids)]
            return "", "", lambda c: c.get(f"/api/jobs/{job_id}")
        if op == "notifications":
            return "", "", lambda c: c.get("/api/notifications", headers=user)
        if op == "answer":
            question = candidate.question_ids[n % len(candidate.question_ids)]
            text = f"{self.tag}-{candidate.user_id}-{n}"
            body = {"question_id": question, "answer_text": text}
            path = f"/api/tests/{candidate.attempt_id}/answer"
            return (
                f"{candidate.attempt_id}:{question}",
                text,
                lambda c: c.post(path, headers=user, json=body),
            )
        if op == "create_job":
            title = f"{self.tag}-{candidate.user_id}-{n}"
            job = {
                "title": title,
                "company": "Drill",
                "location": "Remote",
                "job_type": "Full Time",
                "description": "Written during a fault drill.",
            }
            return title, title, lambda c: c.post("/api/admin/jobs", headers=admin, json=job)
        if op == "upload":
            files = {"file": (f"{self.tag}-{n}.txt", RESUME, "text/plain")}
            return (
                str(candidate.user_id),
                "",
                lambda c: c.post("/api/profile/resume", headers=user, files=files),
            )
        if op == "ai":
            # A new topic each time: generated questions are cached per request body.
            body = {"topic": f"Python {self.tag} {n}", "count": 1, "difficulty": "easy"}
            return "", "", lambda c: c.post("/api/admin/ai-generate", headers=admin, json=body)
        raise ValueError(op)

    def _call(self, client: httpx.Client, candidate: Candidate, op: str, n: int) -> None:
        key, value, send = self._request(candidate, op, n)
        started = time.monotonic()
        with self._lock:
            self._in_flight[op] += 1
        status: int | None = None
        error: str | None
        violation: str | None
        try:
            response = send(client)
        except httpx.HTTPError as exc:
            error, violation = type(exc).__name__, "no answer"
        else:
            status = response.status_code
            error, violation = _error_code(response), contract_violation(response)
        call = Call(op, key, value, status, error, violation, started, time.monotonic())
        with self._lock:
            self._in_flight[op] -= 1
            self.calls.append(call)


@dataclass(frozen=True)
class Ledger:
    acknowledged: int
    refused: int
    lost: list[str]
    duplicated: list[str]
    refused_but_written: list[str]


async def check_ledger(postgres_url: str, calls: Sequence[Call]) -> Ledger:
    """Compare the acknowledged and refused writes with what the database holds.

    Answers replace each other per (attempt, question), and one thread writes each key in
    order: the stored text must be the last acknowledged one (a later refused write must not
    have landed). Job titles are unique per call: acknowledged once, refused never. A call
    without an HTTP answer, or answered commit_outcome_unknown, may be either.
    """
    writes = [call for call in calls if call.op in ("answer", "create_job")]
    connection = await asyncpg.connect(asyncpg_dsn(postgres_url))
    try:
        stored_answers = {
            f"{row['attempt_id']}:{row['question_id']}": row["answer_text"]
            for row in await connection.fetch(
                "SELECT attempt_id, question_id, answer_text FROM answers"
            )
        }
        titles = [call.value for call in writes if call.op == "create_job"]
        job_counts: Counter[str] = Counter(
            {
                row["title"]: row["n"]
                for row in await connection.fetch(
                    "SELECT title, count(*) AS n FROM jobs WHERE title = ANY($1) GROUP BY title",
                    titles,
                )
            }
        )
    finally:
        await connection.close()

    lost: list[str] = []
    duplicated: list[str] = []
    refused_but_written: list[str] = []
    by_key: dict[str, list[Call]] = defaultdict(list)
    for call in sorted(writes, key=lambda c: c.started):
        if call.op == "answer":
            by_key[call.key].append(call)
        elif call.ok and job_counts[call.value] != 1:
            (lost if job_counts[call.value] == 0 else duplicated).append(call.value)
        elif call.refused and job_counts[call.value]:
            refused_but_written.append(call.value)
    for key, answers in by_key.items():
        stored = stored_answers.get(key)
        acknowledged = [index for index, call in enumerate(answers) if call.ok]
        refused = {call.value for call in answers if call.refused}
        if acknowledged:
            last = acknowledged[-1]
            possible = {answers[last].value} | {
                c.value for c in answers[last:] if not c.ok and not c.refused
            }
            if stored not in possible:
                target = refused_but_written if stored in refused else lost
                target.append(f"{key}: {answers[last].value} (stored {stored})")
        elif stored in refused:
            refused_but_written.append(f"{key}: {stored}")
    return Ledger(
        acknowledged=sum(1 for call in writes if call.ok),
        refused=sum(1 for call in writes if call.refused),
        lost=lost,
        duplicated=duplicated,
        refused_but_written=refused_but_written,
    )


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass(frozen=True)
class Drill:
    """A fault's window on the traffic's clock and what the clients saw."""

    name: str
    calls: list[Call]
    fault_started: float
    fault_ended: float

    def violations(self, *, allow_refused_connections: bool = False) -> list[Call]:
        """Calls outside the error contract (dropped connections allowed only where the process
        is stopping: new connections are then refused at the socket)."""
        return [
            call
            for call in self.calls
            if call.violation is not None
            and not (allow_refused_connections and call.error == "ConnectError")
        ]

    def during(self) -> list[Call]:
        return [c for c in self.calls if self.fault_started <= c.started <= self.fault_ended]

    def statuses(self, calls: Sequence[Call] | None = None) -> dict[str, int]:
        return dict(Counter(call.label for call in (self.calls if calls is None else calls)))

    def recovery_seconds(self) -> float:
        """From the fault's end until the last failed call ended (0 if none failed after it)."""
        late = [c.ended for c in self.calls if not c.ok and c.ended >= self.fault_ended]
        return round(max(late) - self.fault_ended, 2) if late else 0.0

    def p99_ms(self) -> float:
        return round(_percentile([c.ended - c.started for c in self.during()], 0.99) * 1000, 1)

    def report(self, ledger: Ledger | None, **extra: Any) -> dict[str, Any]:
        """The drill's summary row (also written to the report file, see write_report)."""
        row = {
            "drill": self.name,
            "requests": len(self.calls),
            "statuses_during_fault": self.statuses(self.during()),
            "statuses": self.statuses(),
            "p99_ms_during_fault": self.p99_ms(),
            "fault_seconds": round(self.fault_ended - self.fault_started, 2),
            "recovery_seconds": self.recovery_seconds(),
            "slowest_during_fault": [
                f"{c.op} {c.label} {round((c.ended - c.started) * 1000)}ms"
                for c in sorted(self.during(), key=lambda c: c.started - c.ended)[:3]
            ],
            **(
                {
                    "writes_acknowledged": ledger.acknowledged,
                    "writes_refused": ledger.refused,
                    "lost": len(ledger.lost),
                    "duplicated": len(ledger.duplicated),
                    "refused_but_written": len(ledger.refused_but_written),
                }
                if ledger is not None
                else {}
            ),
            **extra,
        }
        write_report(row)
        return row


def write_report(row: dict[str, Any]) -> None:
    """Append a drill's summary row to $FAULT_DRILL_REPORT (JSON lines), when it is set."""
    path = os.environ.get("FAULT_DRILL_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as report:
            report.write(json.dumps(row) + "\n")


@dataclass
class FaultWindow:
    """`with window.fault(): ...` marks when the fault was in force."""

    started: float = 0.0
    ended: float = 0.0

    def __enter__(self) -> "FaultWindow":
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.ended = time.monotonic()


def finish(drill: Drill, postgres_url: str, *servers: GunicornServer, **extra: Any) -> Ledger:
    """The checks every drill makes, after writing its summary row (`extra` goes into it)."""
    ledger = asyncio.run(check_ledger(postgres_url, drill.calls))
    drill.report(ledger, **extra)
    assert_clean(drill, ledger, [server.log_text() for server in servers])
    return ledger


def readiness(server: GunicornServer) -> httpx.Response:
    """The server's /health/ready answer."""
    return httpx.get(f"{server.url}/health/ready", timeout=30)


def assert_clean(
    drill: Drill,
    ledger: Ledger | None,
    server_logs: Sequence[str],
    *,
    allow_refused_connections: bool = False,
) -> None:
    """The promises every drill checks: contract, ledger, no traceback."""
    outside = drill.violations(allow_refused_connections=allow_refused_connections)
    assert outside == [], outside[:5]
    if ledger is not None:
        assert ledger.lost == []
        assert ledger.duplicated == []
        assert ledger.refused_but_written == []
    for log in server_logs:
        assert "Traceback" not in log, log[-4000:]
        assert "Exception in ASGI application" not in log


@dataclass
class Scenario:
    """Runs traffic around a fault: steady first, the fault, recovery, then stop."""

    server: GunicornServer
    population: Population
    name: str
    ops: Sequence[str] = BASE_OPS

    def run(self, inject: Callable[[], None], *, recover_within: float = 30.0) -> Drill:
        traffic = Traffic(self.server.url, self.population, tag=self.name, ops=self.ops)
        began = time.monotonic()
        traffic.start()
        try:
            traffic.wait_steady(began)
            window = FaultWindow()
            with window:
                inject()
            traffic.wait_steady(window.ended, within=recover_within)
        finally:
            traffic.stop()
        return Drill(self.name, traffic.snapshot(), window.started, window.ended)
