"""Locust load test: the plan's candidate and admin mix, and its four scenarios.

Run against a local server only, e.g.:
    locust -f tests/load_test.py --host http://127.0.0.1:8000 --headless -u 100 -r 10 -t 2m
    LOAD_SCENARIO=spike locust -f tests/load_test.py --host http://127.0.0.1:8000 --headless

Scenarios (LOAD_SCENARIO): normal (100 users steady), spike (100 -> 1,000 suddenly -> 100),
soak (100 users for 1 hour), stress (up to 1,000 users at 50/s, held for 10 minutes).
Accounts come from `python -m devtools.seed` (loadtest_N@test.com / LoadTest123!, admin
loadtest_admin@test.com / AdminTest123!, and with `--admins N` loadtest_admin_2..N@test.com for
LOADTEST_ADMINS=N concurrent admins); a missing candidate account is registered.

Each simulated user sends its own client address in X-Forwarded-For (documentation ranges, never
contacted) so the server, run with TRUSTED_PROXY_COUNT=1 as behind the ALB, rate-limits them as
distinct clients rather than as one IP.
"""

import itertools
import os
import random
import time
from typing import Any

from locust import HttpUser, LoadTestShape, between, events, task
from locust.env import Environment

CANDIDATE_POOL = int(os.environ.get("LOADTEST_CANDIDATES", "200"))
# Concurrent admins share this many accounts (seed --admins N); each account has its own limits.
ADMIN_POOL = int(os.environ.get("LOADTEST_ADMINS", "1"))
CANDIDATE_PASSWORD = "LoadTest123!"
ADMIN_PASSWORD = "AdminTest123!"
SLOW_SECONDS = 2.0

_user_numbers = itertools.count(random.randrange(CANDIDATE_POOL))
_outcomes: dict[str, int] = {"requests": 0, "slow": 0, "rate_limited": 0, "server_errors": 0}


def _client_address(number: int) -> str:
    # 198.51.100.0/24 and 203.0.113.0/24 (RFC 5737): header values only, never contacted.
    network = "198.51.100" if number % 2 else "203.0.113"
    return f"{network}.{number % 250 + 1}"


@events.request.add_listener  # type: ignore[untyped-decorator]  # locust is untyped
def _count(
    request_type: str, name: str, response_time: float, response: Any, exception: Any, **_: Any
) -> None:
    _outcomes["requests"] += 1
    if response_time > SLOW_SECONDS * 1000:
        _outcomes["slow"] += 1
    status = getattr(response, "status_code", 0)
    if status == 429:
        _outcomes["rate_limited"] += 1
    elif status >= 500:
        _outcomes["server_errors"] += 1


@events.quitting.add_listener  # type: ignore[untyped-decorator]
def _report(environment: Environment, **_: Any) -> None:
    total = max(_outcomes["requests"], 1)
    limited, errors = _outcomes["rate_limited"], _outcomes["server_errors"]
    print(
        f"requests={_outcomes['requests']} slow(>{SLOW_SECONDS:g}s)={_outcomes['slow']} "
        f"rate_limited={limited} ({100 * limited / total:.2f}%) "
        f"server_errors={errors} ({100 * errors / total:.3f}%)"
    )


class CandidateUser(HttpUser):
    """A candidate browsing jobs and tests, and now and then taking a test."""

    weight = 9
    wait_time = between(1, 5)

    def on_start(self) -> None:
        number = next(_user_numbers) % CANDIDATE_POOL + 1
        self.client.headers["X-Forwarded-For"] = _client_address(number)
        email = f"loadtest_{number}@test.com"
        response = self.client.post(
            "/api/auth/login",
            json={"email": email, "password": CANDIDATE_PASSWORD},
            name="/api/auth/login",
        )
        if response.status_code == 401:
            response = self.client.post(
                "/api/auth/register",
                json={
                    "email": email,
                    "password": CANDIDATE_PASSWORD,
                    "full_name": f"Load Test {number}",
                },
                name="/api/auth/register",
            )
        token = response.json().get("access_token") if response.ok else None
        if token:
            self.client.headers["Authorization"] = f"Bearer {token}"

    @task(10)
    def profile(self) -> None:
        self.client.get("/api/profile")

    @task(8)
    def jobs(self) -> None:
        self.client.get("/api/jobs")

    @task(5)
    def available_tests(self) -> None:
        self.client.get("/api/tests/available")

    @task(3)
    def notifications(self) -> None:
        self.client.get("/api/notifications")

    @task(2)
    def search_jobs(self) -> None:
        self.client.get("/api/jobs?search=developer&job_type=Full Time", name="/api/jobs?search")

    @task(1)
    def take_test(self) -> None:
        tests = self.client.get("/api/tests/available")
        # Only tests the attempt policy lets this candidate start (or resume) now; the seeded
        # demo tests allow many retakes without a cooldown.
        open_tests = [test for test in tests.json() if test["can_start"]] if tests.ok else []
        if not open_tests:
            return
        test_id = random.choice(open_tests)["id"]
        started = self.client.post("/api/tests/start", json={"test_id": test_id})
        if not started.ok:
            return
        attempt = started.json()
        for question in attempt["questions"][:3]:
            self.client.post(
                f"/api/tests/{attempt['attempt_id']}/answer",
                json={
                    "question_id": question["id"],
                    "answer_text": random.choice(question["options"]),
                },
                name="/api/tests/[attempt_id]/answer",
            )
            time.sleep(0.5)
        self.client.post("/api/tests/complete", json={"attempt_id": attempt["attempt_id"]})


class AdminUser(HttpUser):
    """An admin reviewing candidates and results."""

    weight = 1
    wait_time = between(2, 8)

    def on_start(self) -> None:
        number = next(_user_numbers)
        self.client.headers["X-Forwarded-For"] = _client_address(CANDIDATE_POOL + number)
        admin = number % ADMIN_POOL + 1
        email = "loadtest_admin@test.com" if admin == 1 else f"loadtest_admin_{admin}@test.com"
        response = self.client.post(
            "/api/auth/admin/login", json={"email": email, "password": ADMIN_PASSWORD}
        )
        if response.ok:
            self.client.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    @task(5)
    def dashboard(self) -> None:
        self.client.get("/api/admin/dashboard")

    @task(4)
    def candidates(self) -> None:
        self.client.get("/api/admin/candidates")

    @task(3)
    def results(self) -> None:
        self.client.get("/api/admin/results")

    @task(2)
    def search_candidates(self) -> None:
        self.client.get(
            "/api/admin/candidates/search?q=python developer", name="/api/admin/candidates/search"
        )


_STAGES: dict[str, list[tuple[int, int, float]]] = {
    # (until second, users, spawn rate per second)
    "normal": [(600, 100, 10)],
    "spike": [(120, 100, 10), (300, 1000, 500), (420, 100, 100)],
    "soak": [(3600, 100, 10)],
    "stress": [(600, 1000, 50)],
}
SCENARIO = os.environ.get("LOAD_SCENARIO")

if SCENARIO:
    if SCENARIO not in _STAGES:
        raise SystemExit(f"LOAD_SCENARIO must be one of {', '.join(_STAGES)}")
    _SCENARIO_STAGES = _STAGES[SCENARIO]

    class ScenarioShape(LoadTestShape):
        """Users over time for the chosen scenario; stops by itself at the end."""

        stages = _SCENARIO_STAGES

        def tick(self) -> tuple[int, float] | None:
            elapsed = self.get_run_time()  # type: ignore[no-untyped-call]
            for until, users, rate in self.stages:
                if elapsed < until:
                    return users, rate
            return None
