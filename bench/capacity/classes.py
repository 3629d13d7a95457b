"""Locust file of class_cost.sh: one class of routes alone, at a fixed rate per user.

CLASS (environment) picks the users:
  cached_jobs    GET /api/jobs (a cache hit: one Redis call, no database)
  cached_read    GET /api/jobs and GET /api/tests/available (a shared cache entry plus one
                 indexed read of the caller's attempts), alternately
  uncached_read  GET /api/profile and GET /api/notifications, alternately
  write          a test taken again and again: start, three answers, complete
  login          POST /api/auth/login (argon2), each from a new client address
  bare           GET /api/jobs against bare_app.py, with the same headers as cached_jobs
Every task is one request; each user runs CLASS_RATE of them per second (constant throughput),
so the rate is the same whatever the latency, as long as the box keeps up. Each user has its
own X-Forwarded-For, like tests/load_test.py, and its account's token from CLASS_ACCOUNTS (the
JSON of bench/overload/tokens.py: what a login hands out), so no argon2 runs before or during
the measurement but the login class's own.

CLASS_WINDOW="START END" (epoch seconds): requests that finish inside it are counted by status
and timed, and written to CLASS_RESULT_FILE (JSON) when locust quits; class_cost.sh samples the
processes' CPU at the same two moments.
"""

import itertools
import json
import os
import random
import time
from collections import Counter
from typing import Any

from locust import FastHttpUser, constant_throughput, events, task
from locust.env import Environment

CLASSES = ("cached_jobs", "cached_read", "uncached_read", "write", "login", "bare")
CLASS = os.environ.get("CLASS", "cached_read")
if CLASS not in CLASSES:
    raise SystemExit(f"CLASS must be one of {', '.join(CLASSES)}")
RATE = float(os.environ.get("CLASS_RATE", "0.8"))
WINDOW = [float(value) for value in os.environ.get("CLASS_WINDOW", "0 1e12").split()]
PASSWORD = "LoadTest123!"
with open(os.environ["CLASS_ACCOUNTS"]) as _file:
    ACCOUNTS: dict[str, Any] = json.load(_file)
CANDIDATES: list[dict[str, Any]] = ACCOUNTS["candidates"]

_numbers = itertools.count()
_statuses: Counter[int] = Counter()
_times_ms: list[float] = []


def _client_address(number: int) -> str:
    # 198.18.0.0/15 (RFC 2544, reserved for benchmarks): header values only, never contacted.
    offset = number % 131_072
    return f"198.{18 + offset // 65_536}.{offset // 256 % 256}.{offset % 256}"


@events.request.add_listener
def _count(response_time: float, response: Any, **_: Any) -> None:
    if WINDOW[0] <= time.time() < WINDOW[1]:
        _statuses[getattr(response, "status_code", 0) or 0] += 1
        _times_ms.append(response_time)


@events.quitting.add_listener
def _write(environment: Environment, **_: Any) -> None:
    times = sorted(_times_ms)

    def percentile(share: float) -> float:
        return times[min(len(times) - 1, int(len(times) * share))] if times else 0.0

    result = {
        "class": CLASS,
        "window": WINDOW,
        "requests": sum(_statuses.values()),
        "statuses": {str(status): count for status, count in sorted(_statuses.items())},
        "p50_ms": percentile(0.5),
        "p95_ms": percentile(0.95),
        "p99_ms": percentile(0.99),
    }
    path = os.environ.get("CLASS_RESULT_FILE")
    if path:
        with open(path, "w") as file:
            json.dump(result, file, indent=2)


class ClassUser(FastHttpUser):
    """One user of the chosen class; its tasks are one request each."""

    abstract = True
    wait_time = constant_throughput(RATE)

    def on_start(self) -> None:
        self.number = next(_numbers)
        self.account = CANDIDATES[self.number % len(CANDIDATES)]
        self.headers = {
            "X-Forwarded-For": _client_address(self.number),
            "Authorization": f"Bearer {self.account['token']}",
        }
        # Users started together would send in step: spread them over one period.
        time.sleep(random.random() / RATE)

    def get(self, path: str) -> Any:
        return self.client.get(path, headers=self.headers)


class CachedJobs(ClassUser):
    abstract = CLASS != "cached_jobs"

    @task
    def jobs(self) -> None:
        self.get("/api/jobs")


class AlternateReads(ClassUser):
    """GETs of PATHS in turn."""

    abstract = True
    PATHS: tuple[str, ...] = ()

    def on_start(self) -> None:
        super().on_start()
        self.paths = itertools.cycle(self.PATHS)

    @task
    def reads(self) -> None:
        self.get(next(self.paths))


class CachedRead(AlternateReads):
    abstract = CLASS != "cached_read"
    PATHS = ("/api/jobs", "/api/tests/available")


class UncachedRead(AlternateReads):
    abstract = CLASS != "uncached_read"
    PATHS = ("/api/profile", "/api/notifications")


class Write(ClassUser):
    abstract = CLASS != "write"

    def on_start(self) -> None:
        super().on_start()
        self.attempt: dict[str, Any] | None = None
        self.answered = 0

    @task
    def step(self) -> None:
        if self.attempt is None:
            started = self.client.post(
                "/api/tests/start",
                json={"test_id": random.choice(ACCOUNTS["tests"])},
                headers=self.headers,
            )
            self.attempt = started.json() if started.ok else None
            self.answered = 0
        elif self.answered < min(3, len(self.attempt["questions"])):
            question = self.attempt["questions"][self.answered]
            self.client.post(
                f"/api/tests/{self.attempt['attempt_id']}/answer",
                json={"question_id": question["id"], "answer_text": question["options"][0]},
                headers=self.headers,
                name="/api/tests/[attempt_id]/answer",
            )
            self.answered += 1
        else:
            self.client.post(
                "/api/tests/complete",
                json={"attempt_id": self.attempt["attempt_id"]},
                headers=self.headers,
            )
            self.attempt = None


class Login(ClassUser):
    abstract = CLASS != "login"

    @task
    def login(self) -> None:
        # A new client address each time: the auth tier allows 10 logins a minute per address.
        self.client.post(
            "/api/auth/login",
            json={"email": self.account["email"], "password": PASSWORD},
            headers={"X-Forwarded-For": _client_address(next(_numbers))},
        )


class Bare(ClassUser):
    abstract = CLASS != "bare"

    @task
    def jobs(self) -> None:
        self.get("/api/jobs")
