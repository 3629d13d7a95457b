"""A real gunicorn master with our config and worker class: multiprocess metrics, SIGTERM, HUP and
the rolling restart under load, and what gunicorn's graceful_timeout really does to uvicorn
workers."""

import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.support.gunicorn_server import GunicornServer, process_gone, sample
from tests.support.wait import wait_until_sync

pytestmark = pytest.mark.slow
# Latencies during restarts, for comparison (`--log-cli-level=INFO`); never asserted on.
logger = logging.getLogger(__name__)

OPS_APP = "tests.deploy.ops_app:app"
# Every wait below is for requests of at most a few seconds, worker boots or signals.
SECONDS = 30.0
# What gunicorn logged when uvloop had already closed a listening socket it closed again.
SOCKET_CLOSE_ERRORS = ("Bad file descriptor", "Error while closing socket")


@pytest.fixture
def gunicorn(postgres_url: str) -> Iterator[GunicornServer]:
    server = GunicornServer(OPS_APP, database_url=postgres_url)
    server.start()
    yield server
    server.stop()


@dataclass
class Load:
    """Client threads sending requests in a loop, one new connection per request (as the
    instance's nginx does towards gunicorn), until stopped."""

    url: str
    path: str
    threads: int = 6
    outcomes: dict[str, int | str] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    # (monotonic start, seconds) per request, to report latencies; never asserted on.
    timings: list[tuple[float, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        for number in range(self.threads):
            thread = threading.Thread(target=self._run, args=(number,), daemon=True)
            thread.start()
            self._workers.append(thread)

    def _run(self, number: int) -> None:
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(timeout=60.0, limits=limits) as client:
            sent = 0
            while not self._stop.is_set():
                request_id = f"load-{number}-{sent}"
                sent += 1
                started = time.monotonic()
                try:
                    response = client.get(
                        f"{self.url}{self.path}", headers={"X-Request-ID": request_id}
                    )
                except httpx.HTTPError as exc:
                    outcome: int | str = type(exc).__name__
                else:
                    outcome = response.status_code
                    if response.status_code == 200:
                        with self._lock:
                            self.pids[request_id] = int(response.json()["pid"])
                with self._lock:
                    self.outcomes[request_id] = outcome
                    self.timings.append((started, time.monotonic() - started))

    def completed(self) -> int:
        with self._lock:
            return sum(1 for outcome in self.outcomes.values() if outcome == 200)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._workers:
            thread.join(timeout=120)

    def latencies(self, since: float, until: float) -> dict[str, float]:
        """Max and p99 seconds of the requests that started in [since, until]."""
        with self._lock:
            durations = sorted(d for start, d in self.timings if since <= start <= until)
        if not durations:
            return {"requests": 0}
        return {
            "requests": len(durations),
            "max_s": round(durations[-1], 3),
            "p99_s": round(durations[int(0.99 * (len(durations) - 1))], 3),
        }


def _request_ignoring_errors(url: str) -> None:
    # The request is cut off at shutdown; the test looks at the server's side.
    with contextlib.suppress(httpx.HTTPError):
        httpx.get(url, timeout=90)


def fewest_accepting(records: list[dict[str, Any]]) -> int | None:
    """The fewest workers that had finished their startup and not begun draining, counted each
    time one began draining (None if none did). A worker's "Application startup complete."
    line comes just before it starts accepting, its "Draining" line just before it stops."""
    accepting: set[int] = set()
    fewest: int | None = None
    for record in records:
        if record["message"] == "Application startup complete.":
            accepting.add(record["pid"])
        elif record["message"].startswith("Draining: "):
            accepting.discard(record["pid"])
            fewest = len(accepting) if fewest is None else min(fewest, len(accepting))
    return fewest


def assert_no_socket_close_errors(log_text: str) -> None:
    for text in SOCKET_CLOSE_ERRORS:
        assert text not in log_text


def test_metrics_aggregate_all_workers_and_forget_dead_ones(gunicorn: GunicornServer) -> None:
    url = gunicorn.url
    blocked: list[int] = []
    # Block one worker's event loop; while it is blocked only the other one accepts.
    blocker = threading.Thread(
        target=lambda: blocked.append(
            httpx.get(
                f"{url}/ops-test/block", headers={"X-Request-ID": "blocker"}, timeout=90
            ).json()["pid"]
        )
    )
    blocker.start()
    wait_until_sync(
        lambda: "blocker" in gunicorn.started_request_ids(),
        within=SECONDS,
        what="the worker to block",
    )
    # Live gauges add up across processes: the blocked request and this scrape.
    assert sample(gunicorn.metrics(), "hiringpro_http_requests_in_progress") == 2
    served = {httpx.get(f"{url}/ops-test/pid", timeout=10).json()["pid"] for _ in range(20)}
    gunicorn.release_file.touch()
    blocker.join()
    assert len(served) == 1
    assert blocked[0] not in served  # two different processes counted the requests below

    text = gunicorn.metrics()
    for route, count in (("/ops-test/pid", 20), ("/ops-test/block", 1)):
        labels = {"method": "GET", "route": route, "status": "200"}
        assert sample(text, "hiringpro_http_requests_total", labels) == count
        assert sample(text, "hiringpro_http_request_duration_seconds_count", labels) == count
    assert sample(text, "hiringpro_db_pool_size") == 40  # 2 live workers x pool of 20

    # Master, gunicorn, uvicorn and app lines share one JSON format; one access line per request.
    # One read of the log: the workers may still be writing to it.
    lines = [line for line in gunicorn.log_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]
    loggers = {record["logger"] for record in records}
    assert {"gunicorn.error", "uvicorn.error", "app.access"} <= loggers
    access = [r for r in records if r["logger"] == "app.access"]
    assert len([r for r in access if r["route"] == "/ops-test/pid"]) == 20
    assert {r["pid"] for r in access if r["route"] == "/ops-test/pid"} == served

    # A worker dies and is replaced: its live gauges go (child_exit), its counters stay.
    dead = blocked[0]
    os.kill(dead, signal.SIGTERM)
    wait_until_sync(
        lambda: not list(gunicorn.metrics_dir.glob(f"gauge_livesum_{dead}.db")),
        within=SECONDS,
        what="the dead worker's live gauges to be removed",
    )
    wait_until_sync(
        lambda: sample(gunicorn.metrics(), "hiringpro_db_pool_size") == 40,
        within=SECONDS,
        what="the replacement worker to report its pool",
    )
    text = gunicorn.metrics()
    block_labels = {"method": "GET", "route": "/ops-test/block", "status": "200"}
    assert sample(text, "hiringpro_http_requests_total", block_labels) == 1


def test_sigterm_under_load_loses_no_in_flight_request(gunicorn: GunicornServer) -> None:
    load = Load(gunicorn.url, "/ops-test/slow?seconds=0.5")
    load.start()
    try:
        wait_until_sync(lambda: load.completed() >= 12, within=SECONDS, what="steady load")
        wait_until_sync(
            lambda: len(gunicorn.started_request_ids()) - load.completed() >= 3,
            within=SECONDS,
            what="requests in flight",
        )
        gunicorn.signal(signal.SIGTERM)
        exit_code = gunicorn.wait(timeout=60)
    finally:
        load.stop()
    started = gunicorn.started_request_ids()
    lost = {rid: load.outcomes.get(rid) for rid in started if load.outcomes.get(rid) != 200}
    assert started
    assert lost == {}
    assert exit_code == 0
    # Every worker ran its lifespan shutdown (closed Redis, queue, engine); none was killed.
    messages = [record["message"] for record in gunicorn.log_records()]
    assert messages.count("Application shutdown complete.") == 2
    assert "SIGKILL" not in gunicorn.log_text()
    assert_no_socket_close_errors(gunicorn.log_text())
    # After the signal, new requests are refused at the socket, never answered with a 5xx.
    assert not [outcome for outcome in load.outcomes.values() if outcome in (500, 502, 504)]


def test_hup_under_load_returns_no_errors(gunicorn: GunicornServer) -> None:
    """Two HUPs while clients keep connecting: every request gets its 200. (The stock worker
    drops connections accepted just before its shutdown: a few resets per HUP under this load.)
    HUP stops every old worker at once, before the new ones have imported the app: for that
    time nothing accepts and connections wait in the listen backlog (recorded, not asserted:
    see the rolling restart below)."""
    load = Load(gunicorn.url, "/ops-test/slow?seconds=0.05", threads=8)
    load.start()
    try:
        restarts_began = time.monotonic()
        for _ in range(2):
            old_workers = gunicorn.booted_workers()
            before = load.completed()
            wait_until_sync(
                lambda: load.completed() >= before + 30,  # noqa: B023
                within=SECONDS,
                what="steady load",
            )
            gunicorn.signal(signal.SIGHUP)
            wait_until_sync(
                lambda: len(gunicorn.booted_workers()) >= len(old_workers) + 2,  # noqa: B023
                within=SECONDS,
                what="new workers to boot",
            )
            wait_until_sync(
                lambda: all(process_gone(pid) for pid in old_workers),  # noqa: B023
                within=SECONDS,
                what="old workers to finish draining",
            )
        restarts_ended = time.monotonic()
        after_restarts = load.completed()
        wait_until_sync(
            lambda: load.completed() >= after_restarts + 30,
            within=SECONDS,
            what="load on new workers",
        )
    finally:
        load.stop()
    errors = {rid: outcome for rid, outcome in load.outcomes.items() if outcome != 200}
    assert errors == {}, gunicorn.log_text()[-4000:]
    served_by = set(load.pids.values())
    all_workers = gunicorn.booted_workers()
    assert served_by & set(all_workers[:2])  # the first generation
    assert served_by & set(all_workers[-2:])  # the last generation
    log_text = gunicorn.log_text()
    assert "SIGKILL" not in log_text
    assert_no_socket_close_errors(log_text)
    logger.info(
        "HUP x2: latency %s, fewest accepting workers %s",
        load.latencies(restarts_began, restarts_ended),
        fewest_accepting(gunicorn.log_records()),
    )


def test_rolling_restart_under_load_keeps_every_worker_slot_accepting(
    gunicorn: GunicornServer,
) -> None:
    """scripts/rolling_restart.sh replaces the workers one at a time: each new one accepts
    connections before an old one begins to drain, so there are never fewer accepting workers
    than configured, and every request gets its 200."""
    load = Load(gunicorn.url, "/ops-test/slow?seconds=0.05", threads=8)
    load.start()
    try:
        wait_until_sync(lambda: load.completed() >= 30, within=SECONDS, what="steady load")
        old_workers = gunicorn.booted_workers()
        restart_began = time.monotonic()
        restart = gunicorn.rolling_restart()
        restart_ended = time.monotonic()
        after_restart = load.completed()
        wait_until_sync(
            lambda: load.completed() >= after_restart + 30,
            within=SECONDS,
            what="load on new workers",
        )
    finally:
        load.stop()
    assert restart.returncode == 0, restart.stderr + gunicorn.log_text()[-4000:]
    errors = {rid: outcome for rid, outcome in load.outcomes.items() if outcome != 200}
    assert errors == {}, gunicorn.log_text()[-4000:]
    new_workers = gunicorn.booted_workers()[len(old_workers) :]
    assert len(old_workers) == len(new_workers) == gunicorn.workers
    assert all(process_gone(pid) for pid in old_workers)
    assert set(load.pids.values()) & set(new_workers)
    # Each new worker marked itself ready; the master removes an old worker's mark just after
    # reaping it (the script's signal that the worker is gone).
    ready_dir = gunicorn.workdir / f"hiring-pro-gunicorn-{gunicorn.pid}"
    wait_until_sync(
        lambda: {int(path.name) for path in ready_dir.iterdir()} == set(new_workers),
        within=SECONDS,
        what="only the new workers' readiness files",
    )
    # From the workers' own lines, in the order they were written: whenever an old worker
    # began draining, as many workers as configured were accepting besides it.
    assert fewest_accepting(gunicorn.log_records()) == gunicorn.workers
    log_text = gunicorn.log_text()
    assert "SIGKILL" not in log_text
    assert_no_socket_close_errors(log_text)
    logger.info("rolling restart: latency %s", load.latencies(restart_began, restart_ended))


def test_requests_running_at_the_drain_deadline_get_503(postgres_url: str) -> None:
    """With our worker uvicorn stops waiting before gunicorn's deadline, cancels what is still
    running and runs the lifespan shutdown in both workers. A cancelled request that has not
    started its response is answered 503 `shutting_down`; one whose response is under way is
    cut; each gets one warning line, and no traceback is logged."""
    server = GunicornServer(
        OPS_APP, database_url=postgres_url, extra_args=("--graceful-timeout", "6")
    )
    server.start()
    answered: list[httpx.Response] = []
    streamed: list[str] = []
    stream_errors: list[str] = []
    first_line = threading.Event()

    def send_plain() -> None:
        answered.append(
            httpx.get(
                f"{server.url}/ops-test/slow?seconds=60",
                headers={"X-Request-ID": "cut-before-response"},
                timeout=90,
            )
        )

    def send_streamed() -> None:
        try:
            with httpx.stream(
                "GET",
                f"{server.url}/ops-test/stream?seconds=60",
                headers={"X-Request-ID": "cut-during-response"},
                timeout=90,
            ) as response:
                for line in response.iter_lines():
                    streamed.append(line)
                    first_line.set()
        except httpx.HTTPError as exc:
            stream_errors.append(type(exc).__name__)

    clients = [threading.Thread(target=send_plain), threading.Thread(target=send_streamed)]
    try:
        for client in clients:
            client.start()
        wait_until_sync(
            lambda: len(server.started_request_ids()) == 2 and first_line.is_set(),
            within=SECONDS,
            what="both requests to be running",
        )
        server.signal(signal.SIGTERM)
        exit_code = server.wait(timeout=60)
        for client in clients:
            client.join(timeout=60)
    finally:
        server.stop()

    [response] = answered
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "shutting_down"
    assert response.headers["retry-after"] == "1"
    assert response.headers["connection"] == "close"
    assert response.headers["x-request-id"] == "cut-before-response"
    assert streamed == ["started"]
    assert len(stream_errors) == 1  # cut before the end of the chunked body

    records = server.log_records()
    for request_id, response_started in (
        ("cut-before-response", False),
        ("cut-during-response", True),
    ):
        lines = [
            r
            for r in records
            if r.get("request_id") == request_id and r["level"] in ("WARNING", "ERROR")
        ]
        assert [(r["event"], r["response_started"]) for r in lines] == [
            ("request_cancelled_at_shutdown", response_started)
        ]
    log_text = server.log_text()
    for text in (
        "Traceback",
        "Exception in ASGI application",
        "ASGI callable returned without completing response",
    ):
        assert text not in log_text
    assert_no_socket_close_errors(log_text)
    messages = server.messages()
    assert any("timeout graceful shutdown exceeded" in m for m in messages)
    assert messages.count("Application shutdown complete.") == 2
    assert exit_code == 0


def test_stock_worker_never_hears_of_graceful_timeout(postgres_url: str) -> None:
    """uvicorn_worker.UvicornWorker leaves uvicorn waiting without limit: the master SIGKILLs
    the busy worker at its deadline, so only the idle worker runs its lifespan shutdown."""
    server = GunicornServer(
        OPS_APP,
        database_url=postgres_url,
        extra_args=("--worker-class", "uvicorn_worker.UvicornWorker", "--graceful-timeout", "6"),
    )
    server.start()
    try:
        stuck = threading.Thread(
            target=_request_ignoring_errors, args=(f"{server.url}/ops-test/slow?seconds=60",)
        )
        stuck.start()
        wait_until_sync(
            lambda: server.started_request_ids(), within=SECONDS, what="the long request to start"
        )
        server.signal(signal.SIGTERM)
        server.wait(timeout=60)
        stuck.join(timeout=60)
    finally:
        server.stop()
    messages = server.messages()
    assert messages.count("Application shutdown complete.") == 1
    assert not [m for m in messages if "timeout graceful shutdown exceeded" in m]
