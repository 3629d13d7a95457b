"""Locust load test: the plan's candidate and admin mix, its four scenarios and its verdict.

Run against a local server only, e.g.:
    locust -f tests/load_test.py --host http://127.0.0.1:8000 --headless -u 100 -r 10 -t 2m
    LOAD_SCENARIO=stress LOAD_USERS=3000 locust -f tests/load_test.py --host ... --headless
bench/capacity/run.sh runs it against the production command with a fresh database.

Scenarios (LOAD_SCENARIO; without one, locust's -u/-r/-t apply), sized by the environment:
  ramp    up to LOAD_USERS (1,000) at LOAD_SPAWN_RATE (20/s), held LOAD_HOLD_SECONDS (300)
  spike   LOAD_BASE_USERS (LOAD_USERS / 10) for LOAD_BASE_SECONDS (120), a jump to LOAD_USERS
          at LOAD_SPIKE_RATE (50/s) held LOAD_SPIKE_SECONDS (180), back to the base for
          LOAD_AFTER_SECONDS (120)
  stress  steps of LOAD_STEP_USERS (500) every LOAD_STEP_SECONDS (120) up to LOAD_USERS: the
          knee is the last step that still meets the criteria
  soak    up to LOAD_USERS at LOAD_SPAWN_RATE, held LOAD_SOAK_SECONDS (1,200)
Every scenario is a list of phases; each phase is measured on its own, after its users have
been spawned and LOAD_SETTLE_SECONDS (10) have passed (the spike's phases from their start:
the jump is what they measure). At the end the master prints each phase's figures and the
verdict on the plan's criteria over the whole run (p95 < 500 ms, p99 < 2,000 ms, errors < 0.1%,
429 answers < 5%; req/s is shown, not judged), and exits 1 when the run fails them. A stress
run normally fails as a whole (its top steps are past the knee); its result is the knee.
LOAD_PHASES_FILE names a JSON file for the phases' figures (bench/capacity reads it).

Figures are taken from what the master sees (locust's stats and the status counts the workers
report), so they hold with `--processes N` and distributed runs alike.

Accounts come from `python -m devtools.seed` (loadtest_N@test.com / LoadTest123!, admin
loadtest_admin@test.com / AdminTest123!, and with `--admins N` loadtest_admin_2..N@test.com for
LOADTEST_ADMINS=N concurrent admins); a missing candidate account is registered. Seed at least
as many candidates as users (LOADTEST_CANDIDATES): each user then has an account of its own.
With N load processes, LOADTEST_PROCESSES=N keeps their users' numbers apart.

Each simulated user logs in on start and again before its token expires, after a random 85-95%
of the token's lifetime: a soak longer than ACCESS_TOKEN_EXPIRE_MINUTES renews sessions the way a
client does instead of sending expired tokens, and not all at once. Each sends its own client
address in X-Forwarded-For (198.18.0.0/15, the range reserved for benchmarks, never contacted)
so the server, run with TRUSTED_PROXY_COUNT=1 as behind the ALB, rate-limits users as distinct
clients.
"""

import itertools
import json
import math
import os
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import jwt
from locust import FastHttpUser, LoadTestShape, between, events, task
from locust.env import Environment
from locust.runners import WORKER_REPORT_INTERVAL, MasterRunner, WorkerRunner
from locust.stats import calculate_response_time_percentile, diff_response_time_dicts


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    return float(value) if value else default


CANDIDATE_POOL = _env_int("LOADTEST_CANDIDATES", 200)
# Concurrent admins share this many accounts (seed --admins N); each account has its own limits.
ADMIN_POOL = _env_int("LOADTEST_ADMINS", 1)
LOAD_PROCESSES = max(1, _env_int("LOADTEST_PROCESSES", 1))
CANDIDATE_PASSWORD = "LoadTest123!"
ADMIN_PASSWORD = "AdminTest123!"
SLOW_MS = 2000.0
# A login refused for load (429, 503 login_overloaded, no answer) is tried again after its
# Retry-After (at most this long), as a client would, until it gets an answer.
MAX_RETRY_AFTER_SECONDS = 10.0

# A session is renewed after this share of its token's lifetime (drawn per login).
RENEW_AFTER_SHARE = (0.85, 0.95)

# The plan's success criteria.
MAX_P95_MS = 500
MAX_P99_MS = 2000
MAX_ERROR_RATIO = 0.001
MAX_LIMITED_RATIO = 0.05
# Seconds after a phase's users are spawned before its measurement starts.
SETTLE_SECONDS = _env_float("LOAD_SETTLE_SECONDS", 10)

_spawned = itertools.count()
# Requests by status code ("0": no response), and "slow" ones; workers send theirs to the master.
_outcomes: Counter[str] = Counter()


def _next_user_number(environment: Environment) -> int:
    """A number no other user of this run has, across load processes (LOADTEST_PROCESSES)."""
    runner = environment.runner
    index = max(runner.worker_index, 0) if isinstance(runner, WorkerRunner) else 0
    return index + LOAD_PROCESSES * next(_spawned)


def _client_address(number: int) -> str:
    # 198.18.0.0/15 (RFC 2544): one address per user for the first 131,072 users.
    offset = number % 131_072
    return f"198.{18 + offset // 65_536}.{offset // 256 % 256}.{offset % 256}"


def _retry_after(response: Any) -> float:
    value = (response.headers or {}).get("retry-after", "1")
    try:
        return min(max(float(value), 0.1), MAX_RETRY_AFTER_SECONDS)
    except ValueError:
        return 1.0


@events.request.add_listener  # type: ignore[untyped-decorator]  # locust is untyped
def _count(response_time: float, response: Any, **_: Any) -> None:
    _outcomes[str(getattr(response, "status_code", 0) or 0)] += 1
    if response_time > SLOW_MS:
        _outcomes["slow"] += 1


@events.report_to_master.add_listener  # type: ignore[untyped-decorator]  # locust is untyped
def _send_outcomes(data: dict[str, Any], **_: Any) -> None:
    data["hp_outcomes"] = dict(_outcomes)
    _outcomes.clear()


@events.worker_report.add_listener  # type: ignore[untyped-decorator]  # locust is untyped
def _receive_outcomes(data: dict[str, Any], **_: Any) -> None:
    _outcomes.update(data.get("hp_outcomes", {}))


class _MixUser(FastHttpUser):
    """A user with its own client address (and, once logged in, its bearer token)."""

    abstract = True

    def on_start(self) -> None:
        self.number = _next_user_number(self.environment)
        self.headers = {"X-Forwarded-For": _client_address(self.number)}
        self.renew_at = math.inf
        self.log_in()

    def log_in(self) -> None:
        """Start a session: log in and keep the token (each kind of user has its own login)."""
        raise NotImplementedError

    def _get(self, path: str, name: str | None = None) -> Any:
        self._renew_if_due()
        return self.client.get(path, headers=self.headers, name=name)

    def _post(self, path: str, body: dict[str, Any], name: str | None = None) -> Any:
        self._renew_if_due()
        return self.client.post(path, json=body, headers=self.headers, name=name)

    def _renew_if_due(self) -> None:
        if time.time() >= self.renew_at:
            self.renew_at = math.inf  # until the new token says otherwise
            self.log_in()

    def _login(self, path: str, email: str, password: str) -> Any:
        """Log in, trying again after Retry-After while the server refuses for load."""
        while True:
            response = self.client.post(
                path, json={"email": email, "password": password}, headers=self.headers
            )
            if response.status_code not in (0, 429, 503):
                return response
            time.sleep(_retry_after(response))

    def _use_token(self, response: Any) -> None:
        token = response.json().get("access_token") if response.ok else None
        if not token:
            return
        self.headers["Authorization"] = f"Bearer {token}"
        # Only the expiry is read; the signature is the server's to check (no key here).
        expires = jwt.decode(token, options={"verify_signature": False})["exp"]
        now = time.time()
        self.renew_at = now + (expires - now) * random.uniform(*RENEW_AFTER_SHARE)


class CandidateUser(_MixUser):
    """A candidate browsing jobs and tests, and now and then taking a test."""

    weight = 9
    wait_time = between(1, 5)

    def log_in(self) -> None:
        number = self.number % CANDIDATE_POOL + 1
        email = f"loadtest_{number}@test.com"
        response = self._login("/api/auth/login", email, CANDIDATE_PASSWORD)
        if response.status_code == 401:
            response = self._post(
                "/api/auth/register",
                {"email": email, "password": CANDIDATE_PASSWORD, "full_name": f"Load {number}"},
            )
        self._use_token(response)

    @task(10)
    def profile(self) -> None:
        self._get("/api/profile")

    @task(8)
    def jobs(self) -> None:
        self._get("/api/jobs")

    @task(5)
    def available_tests(self) -> None:
        self._get("/api/tests/available")

    @task(3)
    def notifications(self) -> None:
        self._get("/api/notifications")

    @task(2)
    def search_jobs(self) -> None:
        self._get("/api/jobs?search=developer&job_type=Full Time", name="/api/jobs?search")

    @task(1)
    def take_test(self) -> None:
        tests = self._get("/api/tests/available")
        # Only tests the attempt policy lets this candidate start (or resume) now; the seeded
        # demo tests allow many retakes without a cooldown.
        open_tests = [test for test in tests.json() if test["can_start"]] if tests.ok else []
        if not open_tests:
            return
        started = self._post("/api/tests/start", {"test_id": random.choice(open_tests)["id"]})
        if not started.ok:
            return
        attempt = started.json()
        for question in attempt["questions"][:3]:
            self._post(
                f"/api/tests/{attempt['attempt_id']}/answer",
                {"question_id": question["id"], "answer_text": random.choice(question["options"])},
                name="/api/tests/[attempt_id]/answer",
            )
            time.sleep(0.5)
        self._post("/api/tests/complete", {"attempt_id": attempt["attempt_id"]})


class AdminUser(_MixUser):
    """An admin reviewing candidates and results."""

    weight = 1
    wait_time = between(2, 8)

    def log_in(self) -> None:
        admin = self.number % ADMIN_POOL + 1
        email = "loadtest_admin@test.com" if admin == 1 else f"loadtest_admin_{admin}@test.com"
        self._use_token(self._login("/api/auth/admin/login", email, ADMIN_PASSWORD))

    @task(5)
    def dashboard(self) -> None:
        self._get("/api/admin/dashboard")

    @task(4)
    def candidates(self) -> None:
        self._get("/api/admin/candidates")

    @task(3)
    def results(self) -> None:
        self._get("/api/admin/results")

    @task(2)
    def search_candidates(self) -> None:
        self._get(
            "/api/admin/candidates/search?q=python developer", name="/api/admin/candidates/search"
        )


@dataclass(frozen=True)
class Snapshot:
    """The master's cumulative counts at one moment."""

    at: float
    response_times: dict[int, int]
    outcomes: Counter[str]


def snapshot(environment: Environment) -> Snapshot:
    """What the master has seen so far."""
    return Snapshot(time.time(), dict(environment.stats.total.response_times), _outcomes.copy())


@dataclass(frozen=True)
class Figures:
    """One window of a run, judged by the plan's criteria."""

    seconds: float
    requests: int
    rps: float
    p50_ms: int
    p95_ms: int
    p99_ms: int
    errors: int
    limited: int
    slow: int

    @property
    def error_ratio(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def limited_ratio(self) -> float:
        return self.limited / self.requests if self.requests else 0.0

    @property
    def passed(self) -> bool:
        return (
            self.requests > 0
            and self.p95_ms < MAX_P95_MS
            and self.p99_ms < MAX_P99_MS
            and self.error_ratio < MAX_ERROR_RATIO
            and self.limited_ratio < MAX_LIMITED_RATIO
        )

    def line(self) -> str:
        return (
            f"{self.requests:>9} req {self.rps:>8.1f}/s  p50 {self.p50_ms:>5} "
            f"p95 {self.p95_ms:>5} p99 {self.p99_ms:>5} ms  errors {self.error_ratio:>7.3%}  "
            f"429 {self.limited_ratio:>6.2%}  slow {self.slow}  "
            f"{'PASS' if self.passed else 'FAIL'}"
        )


def figures(before: Snapshot | None, after: Snapshot) -> Figures:
    """The figures of the requests finished between two snapshots (None: the run's start)."""
    times = after.response_times
    outcomes = after.outcomes.copy()
    seconds = after.at - (before.at if before else _run_start)
    if before is not None:
        times = diff_response_time_dicts(times, before.response_times)
        outcomes.subtract(before.outcomes)
    timed = sum(times.values())
    by_status = {int(key): amount for key, amount in outcomes.items() if key != "slow"}
    requests = sum(by_status.values())
    # Errors: no response, or any 4xx/5xx but 429 (judged on its own).
    errors = sum(
        amount
        for status, amount in by_status.items()
        if (status == 0 or status >= 400) and status != 429
    )

    def percentile(share: float) -> int:
        return calculate_response_time_percentile(times, timed, share) if timed else 0

    return Figures(
        seconds=seconds,
        requests=requests,
        rps=requests / seconds if seconds > 0 else 0.0,
        p50_ms=percentile(0.50),
        p95_ms=percentile(0.95),
        p99_ms=percentile(0.99),
        errors=errors,
        limited=by_status.get(429, 0),
        slow=outcomes["slow"],
    )


@dataclass(frozen=True)
class Phase:
    """Users held for a while; measured after spawning and settling (unless from_start)."""

    name: str
    users: int
    spawn_rate: float
    seconds: float
    from_start: bool = False


def _phases(scenario: str) -> list[Phase]:
    users = _env_int("LOAD_USERS", 1000)
    rate = _env_float("LOAD_SPAWN_RATE", 20)
    ramp = Phase("ramp", users, rate, math.ceil(users / rate), from_start=True)
    if scenario == "ramp":
        return [ramp, Phase("hold", users, rate, _env_float("LOAD_HOLD_SECONDS", 300))]
    if scenario == "soak":
        return [ramp, Phase("soak", users, rate, _env_float("LOAD_SOAK_SECONDS", 1200))]
    if scenario == "spike":
        base = _env_int("LOAD_BASE_USERS", max(1, users // 10))
        base_seconds = _env_float("LOAD_BASE_SECONDS", 120)
        spike_rate = _env_float("LOAD_SPIKE_RATE", 50)
        return [
            Phase("base", base, rate, math.ceil(base / rate) + base_seconds),
            Phase(
                "spike", users, spike_rate, _env_float("LOAD_SPIKE_SECONDS", 180), from_start=True
            ),
            # Users leave at once.
            Phase("after", base, users, _env_float("LOAD_AFTER_SECONDS", 120), from_start=True),
        ]
    if scenario == "stress":
        step = _env_int("LOAD_STEP_USERS", 500)
        seconds = _env_float("LOAD_STEP_SECONDS", 120)
        if step / rate + SETTLE_SECONDS >= seconds:
            raise SystemExit("LOAD_STEP_SECONDS must exceed the spawn time plus the settle time")
        counts = [min(step * k, users) for k in range(1, math.ceil(users / step) + 1)]
        return [Phase(f"{count} users", count, rate, seconds) for count in counts]
    raise SystemExit("LOAD_SCENARIO must be one of ramp, spike, stress, soak")


SCENARIO = os.environ.get("LOAD_SCENARIO", "")
PHASES = _phases(SCENARIO) if SCENARIO else []
# Snapshots at each phase's measured start and end, taken by the shape on the master.
_marks: dict[tuple[int, str], Snapshot] = {}
_run_start = time.time()


@events.test_start.add_listener  # type: ignore[untyped-decorator]  # locust is untyped
def _started(**_: Any) -> None:
    global _run_start
    _run_start = time.time()


def _measured_from(index: int) -> float:
    """Seconds after a phase's start when its measurement begins."""
    phase = PHASES[index]
    if phase.from_start:
        return 0.0
    previous = PHASES[index - 1].users if index else 0
    return abs(phase.users - previous) / phase.spawn_rate + SETTLE_SECONDS


if PHASES:

    class ScenarioShape(LoadTestShape):
        """Users over time for the chosen scenario; stops by itself at the end."""

        def tick(self) -> tuple[int, float] | None:
            assert self.runner is not None  # set by locust before the first tick
            environment = self.runner.environment
            elapsed: float = self.get_run_time()  # type: ignore[no-untyped-call]
            start = 0.0
            current: Phase | None = None
            for index, phase in enumerate(PHASES):
                end = start + phase.seconds
                if elapsed >= start + _measured_from(index) and (index, "start") not in _marks:
                    _marks[(index, "start")] = snapshot(environment)
                if elapsed >= end and (index, "end") not in _marks:
                    _marks[(index, "end")] = snapshot(environment)
                if current is None and elapsed < end:
                    current = phase
                start = end
            return (current.users, current.spawn_rate) if current else None


@dataclass(frozen=True)
class PhaseResult:
    """A phase's measured window (epoch seconds) and its figures."""

    phase: Phase
    start: float
    end: float
    figures: Figures


def _phase_results(final: Snapshot) -> list[PhaseResult]:
    results = []
    for index, phase in enumerate(PHASES):
        begin = _marks.get((index, "start"))
        if begin is not None:
            end = _marks.get((index, "end"), final)
            results.append(PhaseResult(phase, begin.at, end.at, figures(begin, end)))
    return results


def _knee(results: list[PhaseResult]) -> Phase | None:
    """The last step of the unbroken run of passing steps from the first one."""
    knee = None
    for result in results:
        if not result.figures.passed:
            break
        knee = result.phase
    return knee


@events.quitting.add_listener  # type: ignore[untyped-decorator]  # locust is untyped
def _report(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return
    if isinstance(environment.runner, MasterRunner):
        # The workers' last reports are at most one interval away (gevent-patched sleep: the
        # master keeps receiving meanwhile).
        time.sleep(WORKER_REPORT_INTERVAL + 0.5)
    final = snapshot(environment)
    overall = figures(None, final)
    results = _phase_results(final)
    if results:
        print(f"Scenario {SCENARIO}, measured phases:")
    for result in results:
        phase = result.phase
        print(
            f"  {phase.name:<12} {phase.users:>6} users {result.figures.seconds:>5.0f} s "
            f"{result.figures.line()}"
        )
    knee = _knee(results) if SCENARIO == "stress" else None
    if SCENARIO == "stress":
        print(f"Knee (last step meeting the criteria): {knee.users if knee else 'none'} users")
    print(
        f"Criteria: p95 < {MAX_P95_MS} ms, p99 < {MAX_P99_MS} ms, errors < {MAX_ERROR_RATIO:.1%},"
        f" 429 < {MAX_LIMITED_RATIO:.0%}"
    )
    print(f"Verdict over the whole run: {overall.line()}")
    if not overall.passed:
        environment.process_exit_code = 1
    path = os.environ.get("LOAD_PHASES_FILE")
    if path:
        report = {
            "scenario": SCENARIO,
            "start": _run_start,
            "end": final.at,
            "overall": asdict(overall) | {"passed": overall.passed},
            "phases": [
                asdict(result.phase)
                | asdict(result.figures)
                | {"start": result.start, "end": result.end, "passed": result.figures.passed}
                for result in results
            ],
            "knee_users": knee.users if knee else None,
        }
        with open(path, "w") as file:
            json.dump(report, file, indent=2)
