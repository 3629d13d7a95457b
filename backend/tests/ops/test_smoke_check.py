"""`python -m ops.smoke_check` as a real process against the web app under gunicorn (healthy, and
with its database unreachable), a port where nothing listens and a server that never answers."""

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import POOLED_RUN
from tests.support.database import BACKEND_DIR
from tests.support.gunicorn_server import GunicornServer
from tests.support.pgbouncer import PgBouncer
from tests.support.redis_server import free_port
from tests.support.wait import LOADED_MACHINE_MARGIN

pytestmark = pytest.mark.slow

VERSION = "9.9.9-smoke"
# Interpreter start and imports plus a handful of short requests (and retry pauses).
RUN_SECONDS = 60.0


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str

    def line(self, name: str) -> str:
        """The output line of the check ``name`` (e.g. "GET /health/ready")."""
        [line] = [line for line in self.stdout.splitlines() if line[6:].split()[:2] == name.split()]
        return line


def smoke_check(base_url: str, *args: str) -> Result:
    """Run the command to completion (fails the test if it hangs)."""
    completed = subprocess.run(
        [sys.executable, "-m", "ops.smoke_check", base_url, *args],
        cwd=BACKEND_DIR,
        capture_output=True,
        text=True,
        timeout=RUN_SECONDS + LOADED_MACHINE_MARGIN,
    )
    return Result(completed.returncode, completed.stdout, completed.stderr)


def _web_server(database_url: str) -> Iterator[GunicornServer]:
    server = GunicornServer(
        "app.main:app", database_url=database_url, workers=1, env={"APP_VERSION": VERSION}
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def healthy_server(postgres_url: str, request: pytest.FixtureRequest) -> Iterator[GunicornServer]:
    """The web app on a migrated database (through PgBouncer in the pooled run)."""
    url = postgres_url
    if POOLED_RUN:
        pooler: PgBouncer = request.getfixturevalue("pgbouncer")
        url = pooler.url_for(postgres_url)
    yield from _web_server(url)


@pytest.fixture(scope="module")
def server_without_database() -> Iterator[GunicornServer]:
    """The web app whose database is a port where nothing listens."""
    yield from _web_server(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/gone")


def test_a_healthy_deployment_passes_every_check(healthy_server: GunicornServer) -> None:
    result = smoke_check(healthy_server.url, "--expect-version", VERSION)

    assert result.code == 0, result.stdout + result.stderr
    assert result.line("GET /health").startswith("PASS")
    ready = result.line("GET /health/ready")
    assert (
        ready.startswith("PASS") and "ready: database=ok (" in ready and "redis=disabled" in ready
    )
    assert result.line("GET /api/jobs").startswith("PASS")
    assert result.line("GET /health/detailed").startswith("PASS")
    assert f"version={VERSION}" in result.line("GET /health/detailed")
    assert "smoke check passed: 4 checks" in result.stdout
    assert result.stderr == ""
    # Each line's request id is on the server's log lines for that request.
    logged = {record.get("request_id") for record in healthy_server.log_records()}
    for name in ("GET /health", "GET /health/ready", "GET /api/jobs", "GET /health/detailed"):
        request_id = result.line(name).split("request-id=")[1].split()[0]
        assert request_id.startswith("smoke-") and request_id in logged


def test_another_version_fails_loudly(healthy_server: GunicornServer) -> None:
    result = smoke_check(healthy_server.url, "--expect-version", "0.0.1")

    assert result.code == 1
    assert result.line("GET /health/detailed").startswith("FAIL")
    assert f"version {VERSION}, expected 0.0.1" in result.line("GET /health/detailed")
    assert "SMOKE CHECK FAILED" in result.stderr and "1 of 4 checks failed" in result.stderr


def test_an_unreachable_database_fails_readiness_and_the_api(
    server_without_database: GunicornServer,
) -> None:
    result = smoke_check(server_without_database.url)

    assert result.code == 1
    assert result.line("GET /health").startswith("PASS")
    ready = result.line("GET /health/ready")
    assert ready.split()[:4] == ["FAIL", "GET", "/health/ready", "503"]
    assert "not_ready: database=down" in ready
    jobs = result.line("GET /api/jobs")
    assert jobs.split()[:4] == ["FAIL", "GET", "/api/jobs", "503"]
    assert "database_unavailable" in jobs
    assert "SMOKE CHECK FAILED" in result.stderr
    assert "2 of 3 checks failed: GET /health/ready (503: not_ready" in result.stderr


def test_nothing_listening_fails_every_check_after_retries() -> None:
    result = smoke_check(f"http://127.0.0.1:{free_port()}", "--timeout", "2")

    assert result.code == 1
    for name in ("GET /health", "GET /health/ready", "GET /api/jobs"):
        line = result.line(name)
        assert line.startswith(f"FAIL  {name}") and "ConnectError after 3 attempt(s)" in line
    assert "3 of 3 checks failed" in result.stderr


def test_a_server_that_never_answers_fails_at_the_timeout(silent_server: int) -> None:
    result = smoke_check(f"http://127.0.0.1:{silent_server}", "--timeout", "1")

    assert result.code == 1
    for name in ("GET /health", "GET /health/ready", "GET /api/jobs"):
        line = result.line(name)
        # Accepted but unanswered: a read timeout, not retried.
        assert line.startswith(f"FAIL  {name}") and "ReadTimeout" in line
    assert "3 of 3 checks failed" in result.stderr


@pytest.mark.parametrize("url", ["localhost:8000", "ftp://example.com", "http://"])
def test_a_bad_url_is_a_usage_error(url: str) -> None:
    result = smoke_check(url)

    assert result.code == 2
    assert "is not" in result.stderr
