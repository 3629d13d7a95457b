"""A real gunicorn master with our config and worker class: multiprocess metrics, SIGTERM and HUP
under load, and what gunicorn's graceful_timeout really does to uvicorn workers."""

import contextlib
import json
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from tests.support.gunicorn_server import GunicornServer, sample
from tests.support.wait import wait_until_sync

pytestmark = pytest.mark.slow

OPS_APP = "tests.deploy.ops_app:app"
# Every wait below is for requests of at most a few seconds, worker boots or signals.
SECONDS = 30.0


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

    def completed(self) -> int:
        with self._lock:
            return sum(1 for outcome in self.outcomes.values() if outcome == 200)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._workers:
            thread.join(timeout=120)


def booted_workers(server: GunicornServer) -> list[int]:
    prefix = "Booting worker with pid: "
    return [
        int(record["message"][len(prefix) :])
        for record in server.log_records()
        if record["message"].startswith(prefix)
    ]


def _request_ignoring_errors(url: str) -> None:
    # The request is cut off at shutdown; the test looks at the server's side.
    with contextlib.suppress(httpx.HTTPError):
        httpx.get(url, timeout=90)


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


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
    # After the signal, new requests are refused at the socket, never answered with a 5xx.
    assert not [outcome for outcome in load.outcomes.values() if outcome in (500, 502, 504)]


def test_hup_rolling_restart_under_load_returns_no_errors(gunicorn: GunicornServer) -> None:
    """Two rolling restarts while clients keep connecting: every request gets its 200. (The
    stock worker drops connections accepted just before its shutdown: a few resets per
    restart under this load.)"""
    load = Load(gunicorn.url, "/ops-test/slow?seconds=0.05", threads=8)
    load.start()
    try:
        for _ in range(2):
            old_workers = booted_workers(gunicorn)
            before = load.completed()
            wait_until_sync(
                lambda: load.completed() >= before + 30,  # noqa: B023
                within=SECONDS,
                what="steady load",
            )
            gunicorn.signal(signal.SIGHUP)
            wait_until_sync(
                lambda: len(booted_workers(gunicorn)) >= len(old_workers) + 2,  # noqa: B023
                within=SECONDS,
                what="new workers to boot",
            )
            wait_until_sync(
                lambda: all(process_gone(pid) for pid in old_workers),  # noqa: B023
                within=SECONDS,
                what="old workers to finish draining",
            )
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
    all_workers = booted_workers(gunicorn)
    assert served_by & set(all_workers[:2])  # the first generation
    assert served_by & set(all_workers[-2:])  # the last generation
    assert "SIGKILL" not in gunicorn.log_text()


@pytest.mark.parametrize(
    ("worker_class", "clean_shutdowns", "cancelled_by_uvicorn"),
    [
        # Ours: uvicorn stops waiting before gunicorn's deadline, cancels the straggler and
        # runs the lifespan shutdown in both workers.
        ("app.gunicorn_worker.UvicornWorker", 2, True),
        # Stock: uvicorn waits without limit; the master SIGKILLs the busy worker at the
        # deadline, so only the idle worker ever runs its lifespan shutdown.
        ("uvicorn_worker.UvicornWorker", 1, False),
    ],
)
def test_graceful_timeout_reaches_uvicorn(
    postgres_url: str, worker_class: str, clean_shutdowns: int, cancelled_by_uvicorn: bool
) -> None:
    server = GunicornServer(
        OPS_APP,
        database_url=postgres_url,
        extra_args=("--worker-class", worker_class, "--graceful-timeout", "6"),
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
    assert messages.count("Application shutdown complete.") == clean_shutdowns
    cancelled = [m for m in messages if "timeout graceful shutdown exceeded" in m]
    assert bool(cancelled) is cancelled_by_uvicorn
