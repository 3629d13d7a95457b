"""Open-loop load generator for the overload bench (bench/overload/run.sh starts it).

Open loop: requests arrive at fixed rates per phase (Poisson arrivals), whatever the server
does; a slow server gets more requests in flight, not fewer arrivals, as with real users. (A
closed-loop generator such as locust waits for each answer before the next request, so the
server slowing down throttles the load and overload never builds up.)

Four streams, each a priority class of the report:

* critical: candidates taking a test, one session per arrival: start, answer every question
  (THINK_SECONDS apart), complete. The next step waits for the previous answer, as a browser
  would; a failed start ends the session, a failed answer does not.
* login: POST /api/auth/login of a seeded candidate (argon2id), no token: normal priority
  on the server, reported apart because it is the expensive part.
* normal: candidate reads (profile, jobs, available tests, notifications, job search).
* background: admin work (candidate search, dashboard, results, /health/detailed).

Every simulated user sends its own address in X-Forwarded-For (the server runs with
TRUSTED_PROXY_COUNT=1), so per-address limits see distinct clients. Several processes can
share one run (`--processes P --index i`): each takes 1/P of every rate and its own share of
the accounts, and all count time from the same `--start-at` wall-clock instant.

Output: one CSV row per request (intended start, phase, class, route, status, latency, error
code, how late the generator sent it) and a JSON summary with the process's own CPU time per
phase. With `--metrics-out`, the server's /metrics is sampled once a second.

Usage (see run.sh): loadgen.py --host URL --accounts accounts.json --start-at EPOCH
    --scenario window --capacity C | --scenario ramp --rates 100,200,... --out rows.csv
"""

import argparse
import asyncio
import csv
import json
import random
import re
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import uvloop

# The surge mix (share of requests per class); the capacity ramp uses the same mix.
SURGE_MIX = {"critical": 0.05, "login": 0.05, "normal": 0.70, "background": 0.20}
# The steady assessment window, as a share of capacity: test-takers, some browsing, a little
# admin work and a trickle of logins. Critical traffic keeps this rate through the surge.
STEADY_LOAD = {"critical": 0.15, "login": 0.01, "normal": 0.20, "background": 0.04}
# Requests per test session with the seeded tests (4, 3 and 3 questions): start, answers,
# complete.
REQUESTS_PER_SESSION = 1 + 10 / 3 + 1
THINK_SECONDS = (0.5, 1.5)
CANDIDATE_PASSWORD = "LoadTest123!"
# A browser gives up eventually; so does the ALB (60 s idle timeout).
CLIENT_TIMEOUT_SECONDS = 30.0
# Connections per generator process, like a proxy's upstream connections (nginx opens one per
# request in flight). Idle ones are closed before the server's keep-alive (5 s) runs out.
CONNECTION_LIMIT = 1000
CLIENT_KEEPALIVE_SECONDS = 4.0
# In-flight requests still running this long after the last phase are abandoned.
DRAIN_SECONDS = CLIENT_TIMEOUT_SECONDS + 5

NORMAL_ROUTES: tuple[tuple[str, int], ...] = (
    ("/api/profile", 10),
    ("/api/jobs", 8),
    ("/api/tests/available", 5),
    ("/api/notifications", 3),
    ("/api/jobs?search", 2),
)
BACKGROUND_ROUTES: tuple[tuple[str, int], ...] = (
    ("/api/admin/candidates/search", 3),
    ("/api/admin/dashboard", 2),
    ("/api/admin/results", 3),
    ("/health/detailed", 1),
)
_SKILLS = (
    *("python", "fastapi", "sql", "postgresql", "aws", "docker", "react"),
    *("typescript", "kubernetes", "java", "spark", "pandas", "redis", "go"),
)
SEARCH_QUERIES = [f"{a} {b}" for a in _SKILLS for b in _SKILLS if a < b]
JOB_SEARCHES = ("developer", "engineer", "data", "python", "remote", "analyst")

METRIC_NAMES = re.compile(
    r"^hiringpro_(overload_limit|overload_in_flight|overload_queued|event_loop_lag_seconds"
    r"|db_pool_waiters|password_hashes_in_flight|password_hashes_queued"
    r"|http_requests_in_progress)(\{[^}]*\})? ([0-9.e+-]+)$"
)


@dataclass(frozen=True)
class Phase:
    """Arrival rates (requests per second, all processes together) from `start` to `end`."""

    name: str
    start: float
    end: float
    rates: dict[str, float]


def window_phases(
    capacity: float, warmup: float, steady: float, surge: float, after: float, factor: float
) -> list[Phase]:
    """The assessment window: steady, a surge to `factor` x capacity, steady again."""
    steady_rates = {name: share * capacity for name, share in STEADY_LOAD.items()}
    surge_total = factor * capacity
    surge_rates = {name: share * surge_total for name, share in SURGE_MIX.items()}
    # Test-takers do not multiply: the surge is everyone else.
    surge_rates["critical"] = steady_rates["critical"]
    extra = surge_total - sum(surge_rates.values())
    others = ("login", "normal", "background")
    weight = sum(SURGE_MIX[name] for name in others)
    for name in others:
        surge_rates[name] += extra * SURGE_MIX[name] / weight
    bounds = [("warmup", warmup, steady_rates), ("steady", steady, steady_rates)]
    bounds += [("surge", surge, surge_rates), ("after", after, steady_rates)]
    phases, start = [], 0.0
    for name, seconds, rates in bounds:
        phases.append(Phase(name, start, start + seconds, dict(rates)))
        start += seconds
    return phases


def ramp_phases(totals: list[float], step_seconds: float, only: str | None = None) -> list[Phase]:
    """The surge mix (or one class only) at each total rate in turn (the capacity
    measurement)."""
    mix = {only: 1.0} if only else SURGE_MIX
    phases, start = [], 0.0
    for total in totals:
        rates = {name: share * total for name, share in mix.items()}
        phases.append(Phase(f"r{total:g}", start, start + step_seconds, rates))
        start += step_seconds
    return phases


@dataclass
class User:
    """One simulated user: its account and the headers it sends."""

    number: int
    email: str
    headers: dict[str, str]


def _address(number: int) -> str:
    # 10.0.0.0/8: header values only, never contacted.
    return f"10.{number >> 16 & 255}.{number >> 8 & 255}.{number & 255}"


def _users(accounts: list[dict[str, Any]], offset: int, index: int, processes: int) -> list[User]:
    users = []
    for number, account in enumerate(accounts):
        if number % processes != index:
            continue
        headers = {
            "Authorization": f"Bearer {account['token']}",
            "X-Forwarded-For": _address(offset + number + 1),
            "Content-Type": "application/json",
        }
        users.append(User(number, account["email"], headers))
    return users


def _weighted(routes: tuple[tuple[str, int], ...]) -> list[str]:
    return [route for route, weight in routes for _ in range(weight)]


def error_code(status: int, payload: bytes) -> str:
    """The shared error shape's code, or what the body is when it is not that shape."""
    if status < 400:
        return ""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return "text:" + payload[:40].decode("latin-1").replace(",", " ")
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("code", ""))
    return "json"


@dataclass
class Generator:
    """One process's share of the run."""

    host: str
    phases: list[Phase]
    candidates: list[User]
    admins: list[User]
    tests: list[int]
    index: int
    processes: int
    start_at: float
    seed: int
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    # /metrics samples: (t, metric, labels, value), when sampling.
    samples: list[tuple[str, str, str, str]] = field(default_factory=list)
    skipped_sessions: int = 0
    cpu_by_phase: dict[str, float] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def run(self, sample_metrics: bool) -> None:
        """Send every phase's arrivals, then wait (bounded) for what is still in flight."""
        # The perf_counter instant of --start-at (uvloop's loop.time() has 1 ms resolution and
        # is cached per loop iteration: too coarse for latencies).
        self._base = time.perf_counter() + (self.start_at - time.time())
        self._free = deque(self.candidates[len(self.candidates) // 2 :])
        self._readers = self.candidates[: len(self.candidates) // 2]
        self._normal = _weighted(NORMAL_ROUTES)
        self._background = _weighted(BACKGROUND_ROUTES)
        self._rng = random.Random(self.seed)
        connector = aiohttp.TCPConnector(
            limit=CONNECTION_LIMIT, keepalive_timeout=CLIENT_KEEPALIVE_SECONDS
        )
        timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_SECONDS)
        async with aiohttp.ClientSession(self.host, connector=connector, timeout=timeout) as http:
            self._http = http
            streams = [
                self._arrivals("critical", self._session),
                self._arrivals("login", self._login),
                self._arrivals("normal", self._read),
                self._arrivals("background", self._admin),
                self._cpu_clock(),
            ]
            sampler = None
            if sample_metrics:
                sampler = asyncio.create_task(self._sample_metrics())
            await asyncio.gather(*streams)
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=DRAIN_SECONDS)
            for task in self._tasks:
                task.cancel()
            if sampler is not None:
                sampler.cancel()

    async def _sleep_until(self, t: float) -> None:
        delay = self._base + t - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)

    def _now(self) -> float:
        return time.perf_counter() - self._base

    def _phase_at(self, t: float) -> str:
        """The phase a request sent at `t` belongs to (a session's later steps may fall in
        the next phase)."""
        for phase in self.phases:
            if t < phase.end:
                return phase.name
        return self.phases[-1].name

    async def _arrivals(
        self, stream: str, action: Callable[[float, str], Coroutine[Any, Any, None]]
    ) -> None:
        rng = random.Random(f"{self.seed}-{stream}-{self.index}")
        for phase in self.phases:
            rate = phase.rates.get(stream, 0.0) / self.processes
            if stream == "critical":
                rate /= REQUESTS_PER_SESSION
            if rate <= 0:
                continue
            t = phase.start + rng.expovariate(rate)
            while t < phase.end:
                await self._sleep_until(t)
                task = asyncio.create_task(action(t, phase.name))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                t += rng.expovariate(rate)

    async def _cpu_clock(self) -> None:
        for phase in self.phases:
            await self._sleep_until(phase.start)
            started = time.process_time()
            await self._sleep_until(phase.end)
            self.cpu_by_phase[phase.name] = time.process_time() - started

    async def _call(
        self,
        cls: str,
        route: str,
        method: str,
        path: str,
        headers: dict[str, str],
        t: float,
        phase: str,
        body: bytes | None = None,
    ) -> tuple[int, bytes]:
        sent = time.perf_counter()
        status, payload, code = 0, b"", ""
        try:
            async with self._http.request(method, path, headers=headers, data=body) as response:
                payload = await response.read()
                status = response.status
        except TimeoutError:
            code = "client_timeout"
        except aiohttp.ClientError as exc:
            code = type(exc).__name__
        latency = time.perf_counter() - sent
        if status:
            code = error_code(status, payload)
        lag = sent - (self._base + t)
        self.rows.append(
            (
                f"{t:.4f}",
                phase,
                cls,
                route,
                status,
                f"{latency * 1000:.2f}",
                code,
                f"{lag * 1000:.2f}",
            )
        )
        return status, payload

    async def _session(self, t: float, phase: str) -> None:
        if not self._free:
            self.skipped_sessions += 1
            return
        user = self._free.popleft()
        try:
            body = orjson.dumps({"test_id": self._rng.choice(self.tests)})
            status, payload = await self._call(
                "critical",
                "/api/tests/start",
                "POST",
                "/api/tests/start",
                user.headers,
                t,
                phase,
                body,
            )
            if status != 200:
                return
            attempt = orjson.loads(payload)
            attempt_id = attempt["attempt_id"]
            for question in attempt["questions"]:
                await asyncio.sleep(self._rng.uniform(*THINK_SECONDS))
                body = orjson.dumps(
                    {
                        "question_id": question["id"],
                        "answer_text": self._rng.choice(question["options"]),
                    }
                )
                path = f"/api/tests/{attempt_id}/answer"
                now = self._now()
                await self._call(
                    "critical",
                    "/api/tests/{id}/answer",
                    "POST",
                    path,
                    user.headers,
                    now,
                    self._phase_at(now),
                    body,
                )
            await asyncio.sleep(self._rng.uniform(*THINK_SECONDS))
            now = self._now()
            await self._call(
                "critical",
                "/api/tests/complete",
                "POST",
                "/api/tests/complete",
                user.headers,
                now,
                self._phase_at(now),
                orjson.dumps({"attempt_id": attempt_id}),
            )
        finally:
            self._free.append(user)

    async def _login(self, t: float, phase: str) -> None:
        user = self._rng.choice(self.candidates)
        # A fresh client each time (a new device): its own address, no token.
        number = self._rng.randrange(1 << 22)
        headers = {
            "X-Forwarded-For": f"100.{64 + (number >> 16)}.{number >> 8 & 255}.{number & 255}",
            "Content-Type": "application/json",
        }
        body = orjson.dumps({"email": user.email, "password": CANDIDATE_PASSWORD})
        await self._call(
            "login", "/api/auth/login", "POST", "/api/auth/login", headers, t, phase, body
        )

    async def _read(self, t: float, phase: str) -> None:
        user = self._rng.choice(self._readers)
        route = self._rng.choice(self._normal)
        path = route
        if route == "/api/jobs":
            path = f"/api/jobs?page={self._rng.randint(1, 10)}"
        elif route == "/api/jobs?search":
            path = f"/api/jobs?search={self._rng.choice(JOB_SEARCHES)}&job_type=Full%20Time"
        await self._call("normal", route, "GET", path, user.headers, t, phase)

    async def _admin(self, t: float, phase: str) -> None:
        user = self._rng.choice(self.admins)
        route = self._rng.choice(self._background)
        path = route
        if route == "/api/admin/candidates/search":
            query = self._rng.choice(SEARCH_QUERIES).replace(" ", "%20")
            path = f"{route}?q={query}"
        elif route == "/api/admin/results":
            path = f"{route}?page={self._rng.randint(1, 20)}"
        await self._call("background", route, "GET", path, user.headers, t, phase)

    async def _sample_metrics(self) -> None:
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(self.host, timeout=timeout) as http:
            while True:
                await asyncio.sleep(1.0)
                t = self._now()
                try:
                    async with http.get("/metrics") as response:
                        text = await response.text() if response.status == 200 else ""
                except (aiohttp.ClientError, TimeoutError):
                    continue
                for line in text.splitlines():
                    match = METRIC_NAMES.match(line)
                    if match:
                        self.samples.append((f"{t:.2f}", match[1], match[2] or "", match[3]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--host", required=True)
    parser.add_argument("--accounts", required=True, help="tokens.py's JSON")
    parser.add_argument("--out", required=True, help="CSV of requests")
    parser.add_argument("--summary", help="JSON summary (CPU time per phase)")
    parser.add_argument("--metrics-out", help="CSV of /metrics samples (one process only)")
    parser.add_argument("--start-at", type=float, required=True, help="wall-clock time of t=0")
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scenario", choices=("window", "ramp"), required=True)
    parser.add_argument("--capacity", type=float, help="window: the box's capacity, req/s")
    parser.add_argument("--factor", type=float, default=3.0, help="window: surge x capacity")
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--steady", type=float, default=30.0)
    parser.add_argument("--surge", type=float, default=45.0)
    parser.add_argument("--after", type=float, default=45.0)
    parser.add_argument("--rates", help="ramp: total req/s per step, comma-separated")
    parser.add_argument("--step-seconds", type=float, default=12.0)
    parser.add_argument("--only", choices=tuple(SURGE_MIX), help="ramp: this class alone")
    args = parser.parse_args()

    if args.scenario == "window":
        if args.capacity is None:
            parser.error("--scenario window needs --capacity")
        phases = window_phases(
            args.capacity, args.warmup, args.steady, args.surge, args.after, args.factor
        )
    else:
        if not args.rates:
            parser.error("--scenario ramp needs --rates")
        totals = [float(r) for r in args.rates.split(",")]
        phases = ramp_phases(totals, args.step_seconds, args.only)
    with open(args.accounts) as handle:
        accounts = json.load(handle)
    candidates = _users(accounts["candidates"], 0, args.index, args.processes)
    admins = _users(accounts["admins"], 1 << 20, args.index, args.processes)
    generator = Generator(
        host=args.host,
        phases=phases,
        candidates=candidates,
        admins=admins,
        tests=accounts["tests"],
        index=args.index,
        processes=args.processes,
        start_at=args.start_at,
        seed=args.seed * 1000 + args.index,
    )
    wall_started, cpu_started = time.time(), time.process_time()
    uvloop.run(generator.run(args.metrics_out is not None))
    with open(args.out, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["t", "phase", "cls", "route", "status", "latency_ms", "code", "lag_ms"])
        writer.writerows(generator.rows)
    if args.metrics_out:
        with open(args.metrics_out, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["t", "metric", "labels", "value"])
            writer.writerows(generator.samples)
    if args.summary:
        summary = {
            "index": args.index,
            "requests": len(generator.rows),
            "skipped_sessions": generator.skipped_sessions,
            "wall_seconds": time.time() - wall_started,
            "cpu_seconds": time.process_time() - cpu_started,
            "phases": [
                {
                    "name": phase.name,
                    "seconds": phase.end - phase.start,
                    "rates": phase.rates,
                    "cpu_seconds": generator.cpu_by_phase.get(phase.name),
                }
                for phase in phases
            ],
        }
        with open(args.summary, "w") as handle:
            json.dump(summary, handle, indent=1)


if __name__ == "__main__":
    main()
