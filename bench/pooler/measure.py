"""bench/pooler's driver (run.sh sets up the database and PgBouncer, then calls this).

1. Prepares the write load: one open attempt at the first seeded test per candidate (inserted
   with SQL, expiring in a day), an access token per candidate minted with the app's own
   app.security.create_access_token, an answer the API accepts per question (its first option),
   and the lines answer.lua rotates over.
2. Starts one uvicorn worker per configuration (all pinned to CPU 0, idle unless measured) and
   measures them in alternation, round by round and route by route (wrk pinned to CPU 1):
   req/s, p50, p99, non-2xx, and CPU per request of the worker, of PgBouncer and of the bench
   database's client backends (utime+stime from /proc), plus PgBouncer's SHOW STATS.
3. Counts the database work of one request per configuration and route: each configuration
   again, one at a time, its DATABASE_URL through wire_counter (a counting proxy), at low
   concurrency; PgBouncer logs logins meanwhile (log_connections switched on at runtime).
"""

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wire_counter import WireCounter

from app.config import Settings
from app.security import create_access_token

ROOT = Path(__file__).resolve().parents[2]
BACKEND = ROOT / "backend"
HERE = Path(__file__).resolve().parent
UVICORN = ROOT / ".venv" / "bin" / "uvicorn"
CLK_TCK = os.sysconf("SC_CLK_TCK")
JWT_SECRET = "bench-pooler-secret-bench-pooler-secret-000"
POSTGRES_PORT = 5432
CONNECTIONS = 64
COUNT_CONNECTIONS = 8
COUNT_SECONDS = 3
ROUTES = ("read", "write")
ROUTE_LABELS = {"read": "GET /api/jobs (uncached)", "write": "POST /api/tests/{id}/answer"}


@dataclass
class Config:
    key: str
    label: str
    pooler: str | None  # None: direct to Postgres; "plain" or "tls": which PgBouncer
    routes: tuple[str, ...] = ROUTES
    env: dict[str, str] = field(default_factory=dict)


def configurations() -> list[Config]:
    """The app's own settings for each path (the first recorded run also had bench-only
    variants: pre-ping on the client pool and the read pool's reset query; see RESULTS.md)."""
    pooled = {"USE_EXTERNAL_POOLER": "true"}
    null_pool = pooled | {"DB_POOLER_CLIENT_POOL_SIZE": "0"}
    client_pool = pooled | {"DB_POOLER_CLIENT_POOL_SIZE": "10"}
    tls = {"DB_SSL": "require"}
    return [
        Config("a", "a direct (app pool)", None, env={"USE_EXTERNAL_POOLER": "false"}),
        Config("b", "b pooler, NullPool", "plain", env=null_pool),
        Config("c", "c pooler, QueuePool(10)", "plain", env=client_pool),
        Config(
            "b-tls", "b pooler with TLS, NullPool", "tls", routes=("write",), env=null_pool | tls
        ),
        Config(
            "c-tls",
            "c pooler with TLS, QueuePool(10)",
            "tls",
            routes=("write",),
            env=client_pool | tls,
        ),
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def psql(sql: str, *, db: str = "postgres", port: int = POSTGRES_PORT) -> list[list[str]]:
    command = ["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", db]
    out = subprocess.run(
        [*command, "-X", "-q", "-At", "-F", "|", "-c", sql],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [line.split("|") for line in out.splitlines() if line]


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (all its threads), or None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


# -- 1. the write load -----------------------------------------------------------------------


def accepted_answers(db: str, test_id: str) -> list[tuple[str, str]]:
    """(question id, answer) for each question of a test: its first option, since an answer must
    be one of the question's options (else 422 invalid_option), or any text for a question
    without options (free text)."""
    rows = psql(
        "SELECT json_build_array(id, coalesce(options->>0, 'free text')) FROM questions "
        f"WHERE test_id = {test_id} ORDER BY id",
        db=db,
    )
    # One JSON column per row: rejoined, as an option may hold psql()'s field separator.
    pairs = (json.loads("|".join(row)) for row in rows)
    return [(str(question_id), answer) for question_id, answer in pairs]


def prepare_answers(db: str, path: Path) -> int:
    """One open attempt per candidate at the first seeded test; the lines for answer.lua:
    "attempt_id question_id token answer", the answer JSON-encoded (it may hold spaces)."""
    [[test_id]] = psql("SELECT min(id) FROM tests WHERE active", db=db)
    answers = accepted_answers(db, test_id)
    psql(
        "INSERT INTO test_attempts (test_id, user_id, status, started_at, expires_at) "
        f"SELECT {test_id}, id, 'in_progress', now(), now() + interval '1 day' "
        "FROM users WHERE role = 'candidate' ON CONFLICT DO NOTHING",
        db=db,
    )
    attempts = psql(
        "SELECT id, user_id FROM test_attempts "
        f"WHERE test_id = {test_id} AND status = 'in_progress' ORDER BY id",
        db=db,
    )
    settings = Settings(jwt_secret=JWT_SECRET, access_token_expire_minutes=24 * 60)
    tokens = {
        user_id: create_access_token(settings, int(user_id), "candidate")[0]
        for _, user_id in attempts
    }
    # Question-major: consecutive requests go to different attempts (different rows).
    lines = [
        f"{attempt_id} {question_id} {tokens[user_id]} {json.dumps(answer)}"
        for question_id, answer in answers
        for attempt_id, user_id in attempts
    ]
    path.write_text("\n".join(lines) + "\n")
    return len(attempts)


# -- 2. servers, wrk and snapshots ------------------------------------------------------------


class Server:
    """One uvicorn worker of the real app (bench_app.py), pinned to CPU 0."""

    def __init__(self, config: Config, db: str, db_port: int, workdir: Path) -> None:
        self.config = config
        self.port = free_port()
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in {"REDIS_URL", "DATABASE_DIRECT_URL", "PROMETHEUS_MULTIPROC_DIR"}
            and not key.startswith(("PGSSL", "DB_"))
        }
        env |= {
            "PYTHONPATH": f"{BACKEND}{os.pathsep}{HERE}",
            "DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:{db_port}/{db}",
            "ENVIRONMENT": "development",
            "JWT_SECRET": JWT_SECRET,
            "CACHE_ENABLED": "false",
            "RATE_LIMIT_ENABLED": "false",
            "LOG_LEVEL": "WARNING",
            "ENABLE_REQUEST_LOGGING": "false",
        }
        env |= config.env
        command = ["taskset", "-c", "0", str(UVICORN), "bench_app:app", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--loop", "uvloop", "--http", "httptools"]
        command += ["--no-access-log", "--log-level", "warning"]
        self.log = workdir / f"uvicorn-{config.key}-{self.port}.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command, cwd=BACKEND, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(self.url("/health"), timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"{config.label} did not start:\n{self.log.read_text()}")
            time.sleep(0.2)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def cpu(self) -> float:
        return cpu_seconds(self.process.pid) or 0.0

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def check_routes(server: Server, answers: Path) -> None:
    """The configuration's routes answer 200 before anything is measured."""
    if "read" in server.config.routes:
        with urllib.request.urlopen(server.url("/api/jobs"), timeout=10) as response:
            body = json.loads(response.read())
            assert response.status == 200 and len(body["items"]) == 20, body
    if "write" in server.config.routes:
        line = answers.read_text().split("\n", 1)[0]
        attempt_id, question_id, token, answer = line.split(" ", 3)
        body = {"question_id": int(question_id), "answer_text": json.loads(answer)}
        request = urllib.request.Request(
            server.url(f"/api/tests/{attempt_id}/answer"),
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200, response.read()


def wrk(
    server: Server, route: str, answers: Path, seconds: int, connections: int
) -> dict[str, Any]:
    """One wrk run; responses slower than 10 s would count as timeouts (none did)."""
    command = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s"]
    command += ["--timeout", "10s", "--latency"]
    if route == "read":
        command.append(server.url("/api/jobs"))
    else:
        command += ["-s", str(HERE / "answer.lua"), server.url("/"), "--", str(answers)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    out = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"wrk failed: {out}")

    def latency_ms(percentile: str) -> float:
        match = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert match, out
        return float(match[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[match[2]]

    requests = re.search(r"(\d+) requests in", out)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert requests and rate, out
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "requests": int(requests[1]),
        "rps": float(rate[1]),
        "p50": latency_ms("50"),
        "p99": latency_ms("99"),
        "non_2xx": int(non_2xx[1]) if non_2xx else 0,
        "socket_errors": sum(int(n) for n in errors.groups()) if errors else 0,
        "wrk_cpu": usage.ru_utime + usage.ru_stime,
    }


class PgBouncer:
    def __init__(self, name: str, port: int, workdir: Path, db: str) -> None:
        self.name = name
        self.port = port
        self.pid = int((workdir / f"{name}.pid").read_text().split()[0])
        self.logfile = workdir / f"{name}.log"
        self.db = db

    def cpu(self) -> float:
        return cpu_seconds(self.pid) or 0.0

    def stats(self) -> dict[str, int]:
        for row in psql("SHOW STATS", db="pgbouncer", port=self.port):
            if row[0] == self.db:
                return {"xacts": int(row[1]), "queries": int(row[2]), "wait_us": int(row[7])}
        return {"xacts": 0, "queries": 0, "wait_us": 0}

    def logins(self) -> int:
        text = self.logfile.read_text(errors="replace")
        return text.count(f"login attempt: db={self.db} ")

    def set(self, option: str, value: str) -> None:
        psql(f"SET {option} = {value}", db="pgbouncer", port=self.port)


def backend_cpu(db: str) -> dict[int, float]:
    """CPU seconds of each client backend connected to the bench database."""
    rows = psql(
        "SELECT pid FROM pg_stat_activity "
        f"WHERE datname = '{db}' AND backend_type = 'client backend'"
    )
    cpu = {int(pid): cpu_seconds(int(pid)) for [pid] in rows}
    return {pid: seconds for pid, seconds in cpu.items() if seconds is not None}


def machine_cpu() -> tuple[float, float]:
    """Busy (user, nice, system, irq, softirq) and steal CPU seconds of the whole machine."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6]
    return busy / CLK_TCK, fields[7] / CLK_TCK


@dataclass
class Bench:
    db: str
    answers: Path
    seconds: int
    poolers: dict[str, PgBouncer]
    servers: dict[str, Server] = field(default_factory=dict)

    def snapshot(self, server: Server) -> dict[str, Any]:
        return {
            "app": server.cpu(),
            "idle_servers": sum(
                other.cpu() for other in self.servers.values() if other is not server
            ),
            "poolers": {name: pooler.cpu() for name, pooler in self.poolers.items()},
            "backends": backend_cpu(self.db),
            "stats": {name: pooler.stats() for name, pooler in self.poolers.items()},
            "machine": machine_cpu(),
            "time": time.monotonic(),
        }

    def measure(self, server: Server, route: str) -> dict[str, Any]:
        before = self.snapshot(server)
        result = wrk(server, route, self.answers, self.seconds, CONNECTIONS)
        after = self.snapshot(server)
        n = result["requests"]
        app = after["app"] - before["app"]
        poolers = {name: after["poolers"][name] - before["poolers"][name] for name in self.poolers}
        postgres = sum(
            cpu - before["backends"].get(pid, 0.0) for pid, cpu in after["backends"].items()
        )
        idle_servers = after["idle_servers"] - before["idle_servers"]
        busy = after["machine"][0] - before["machine"][0]
        ours = app + sum(poolers.values()) + postgres + idle_servers + result["wrk_cpu"]
        elapsed = after["time"] - before["time"]
        pooler = server.config.pooler
        result |= {
            "config": server.config.key,
            "route": route,
            "app_us": app / n * 1e6,
            "pgbouncer_us": (poolers[pooler] if pooler else sum(poolers.values())) / n * 1e6,
            "postgres_us": postgres / n * 1e6,
            "backends_gone": len(set(before["backends"]) - set(after["backends"])),
            "idle_servers_cpu": idle_servers,
            "other_cores": (busy - ours) / elapsed,
            "steal_cores": (after["machine"][1] - before["machine"][1]) / elapsed,
        }
        for key in ("xacts", "queries", "wait_us"):
            result[f"pgb_{key}"] = (
                (after["stats"][pooler][key] - before["stats"][pooler][key]) / n if pooler else 0.0
            )
        return result


# -- 3. round trips -------------------------------------------------------------------------


def count_round_trips(config: Config, bench: Bench, workdir: Path) -> dict[str, dict[str, float]]:
    """Per request: the proxy's counts, and PgBouncer's logins, transactions and queries."""
    pooler = bench.poolers[config.pooler] if config.pooler else None
    counts: dict[str, dict[str, float]] = {}
    with WireCounter("127.0.0.1", pooler.port if pooler else POSTGRES_PORT) as counter:
        server = Server(config, bench.db, counter.port, workdir)
        try:
            for route in config.routes:
                wrk(server, route, bench.answers, 1, COUNT_CONNECTIONS)  # warm-up: pools filled
                time.sleep(0.5)
                before = counter.snapshot()
                stats = pooler.stats() if pooler else None
                logins = pooler.logins() if pooler else 0
                result = wrk(server, route, bench.answers, COUNT_SECONDS, COUNT_CONNECTIONS)
                time.sleep(0.5)
                n = result["requests"]
                delta: Counter[str] = counter.snapshot()
                delta.subtract(before)
                per_request: dict[str, float] = {k: v / n for k, v in delta.items() if v}
                if pooler and stats:
                    after = pooler.stats()
                    per_request |= {
                        "pgb_xacts": (after["xacts"] - stats["xacts"]) / n,
                        "pgb_queries": (after["queries"] - stats["queries"]) / n,
                        "pgb_logins": (pooler.logins() - logins) / n,
                    }
                per_request |= {"requests": n, "non_2xx": result["non_2xx"]}
                counts[route] = per_request
        finally:
            server.stop()
    return counts


# -- output -----------------------------------------------------------------------------------


def _spread(values: list[float], fmt: str) -> str:
    """The median, and the range when there are several values."""
    median = format(statistics.median(values), fmt)
    if min(values) == max(values):
        return median
    return f"{median} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def report(configs: list[Config], runs: list[dict[str, Any]], counts: dict[str, Any]) -> None:
    def rows_of(route: str, key: str) -> list[dict[str, Any]]:
        return sorted(
            (run for run in runs if run["route"] == route and run["config"] == key),
            key=lambda run: run["round"],
        )

    print("\n## Throughput: median of the rounds (min-max)\n")
    print(
        "| route | configuration | req/s | vs direct (a), per round | p50 ms | p99 ms "
        "| non-2xx + socket errors | CPU us/req: app | PgBouncer | Postgres |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for route in ROUTES:
        direct = [run["rps"] for run in rows_of(route, "a")]
        for config in configs:
            rows = rows_of(route, config.key)
            if not rows:
                continue
            ratios = [row["rps"] / base for row, base in zip(rows, direct, strict=True)]
            print(
                f"| {ROUTE_LABELS[route]} | {config.label} "
                f"| {_spread([row['rps'] for row in rows], ',.0f')} "
                f"| {_spread(ratios, '.2f')} "
                f"| {_spread([row['p50'] for row in rows], '.0f')} "
                f"| {_spread([row['p99'] for row in rows], '.0f')} "
                f"| {sum(row['non_2xx'] + row['socket_errors'] for row in rows)} "
                + "".join(
                    f"| {statistics.median(row[key] for row in rows):,.0f} "
                    for key in ("app_us", "pgbouncer_us", "postgres_us")
                )
                + "|"
            )
    print("\nreq/s round by round:")
    for route in ROUTES:
        for config in configs:
            rows = rows_of(route, config.key)
            if rows:
                rates = " / ".join(f"{row['rps']:,.0f}" for row in rows)
                print(f"- {route} {config.key}: {rates}")
    print("\n## PgBouncer SHOW STATS during the timed runs, per request (median of the rounds)\n")
    print("| route | configuration | transactions | queries | client wait for a server, us |")
    print("|---|---|---|---|---|")
    for route in ROUTES:
        for config in configs:
            rows = rows_of(route, config.key)
            if not rows or not config.pooler:
                continue
            print(
                f"| {ROUTE_LABELS[route]} | {config.label} "
                f"| {statistics.median(row['pgb_xacts'] for row in rows):.2f} "
                f"| {statistics.median(row['pgb_queries'] for row in rows):.2f} "
                f"| {statistics.median(row['pgb_wait_us'] for row in rows):,.0f} |"
            )
    print(f"\n## Database work per request (wire_counter, wrk -c{COUNT_CONNECTIONS})\n")
    print(
        "| route | configuration | client connections opened | round trips (of them connect) "
        "| Syncs + Queries | statements parsed | transactions "
        "| PgBouncer logins / xacts / queries |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for route in ROUTES:
        for config in configs:
            row = counts.get(config.key, {}).get(route)
            if row is None:
                continue
            pgb = (
                f"{row['pgb_logins']:.2f} / {row['pgb_xacts']:.2f} / {row['pgb_queries']:.2f}"
                if config.pooler
                else "-"
            )
            print(
                f"| {ROUTE_LABELS[route]} | {config.label} "
                f"| {row.get('connections', 0):.2f} | {row.get('round_trips', 0):.2f} "
                f"({row.get('setup_round_trips', 0):.2f}) | {row.get('syncs', 0):.2f} "
                f"| {row.get('parses', 0):.2f} | {row.get('transactions', 0):.2f} | {pgb} |"
            )
    print("\nStatements per request by first word (Query and Parse messages):")
    for route in ROUTES:
        for config in configs:
            row = counts.get(config.key, {}).get(route)
            if row is None:
                continue
            words = ", ".join(
                f"{key[4:]} {value:.2f}"
                for key, value in sorted(row.items())
                if key.startswith("sql ")
            )
            words = words or "none parsed or sent as text (cached statements: Bind/Execute)"
            print(f"- {route} {config.key}: {words} ({row['requests']:.0f} requests)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--pgbouncer-port", type=int, required=True)
    parser.add_argument("--tls-port", type=int, required=True)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    workdir: Path = args.workdir
    poolers = {
        "plain": PgBouncer("pgbouncer", args.pgbouncer_port, workdir, args.db),
        "tls": PgBouncer("pgbouncer-tls", args.tls_port, workdir, args.db),
    }
    bench = Bench(args.db, workdir / "answers.txt", args.seconds, poolers)
    print(f"{prepare_answers(args.db, bench.answers)} open attempts, one per candidate")
    configs = configurations()
    runs: list[dict[str, Any]] = []
    try:
        for config in configs:
            port = poolers[config.pooler].port if config.pooler else POSTGRES_PORT
            bench.servers[config.key] = Server(config, args.db, port, workdir)
            check_routes(bench.servers[config.key], bench.answers)
        for route in ROUTES:
            for config in configs:
                if route in config.routes:
                    wrk(bench.servers[config.key], route, bench.answers, 2, CONNECTIONS)
        for round_number in range(1, args.rounds + 1):
            # Odd rounds in order, even rounds reversed (ABC CBA): drift within a round and the
            # position in it hit every configuration alike.
            order = configs if round_number % 2 else configs[::-1]
            for route in ROUTES:
                for config in order:
                    if route not in config.routes:
                        continue
                    run = bench.measure(bench.servers[config.key], route)
                    run["round"] = round_number
                    runs.append(run)
                    print(
                        f"round {round_number} {route:5} {config.label:40} "
                        f"{run['rps']:7,.0f} req/s p50 {run['p50']:6.1f} ms "
                        f"p99 {run['p99']:6.1f} ms non-2xx {run['non_2xx']} "
                        f"errors {run['socket_errors']} | CPU us/req app {run['app_us']:.0f} "
                        f"pgbouncer {run['pgbouncer_us']:.0f} postgres {run['postgres_us']:.0f} "
                        f"(backends gone {run['backends_gone']}) | pgbouncer per req: "
                        f"xacts {run['pgb_xacts']:.2f} queries {run['pgb_queries']:.2f} "
                        f"wait {run['pgb_wait_us']:.0f} us | idle servers "
                        f"{run['idle_servers_cpu']:.2f} s, other load "
                        f"{run['other_cores']:.2f} cores, steal {run['steal_cores']:.2f}",
                        flush=True,
                    )
    finally:
        for server in bench.servers.values():
            server.stop()
        bench.servers.clear()
    counts: dict[str, Any] = {}
    poolers["plain"].set("log_connections", "1")
    try:
        for config in configs:
            if config.pooler == "tls":
                continue  # wire_counter does not read TLS; the statements are those of b and c
            counts[config.key] = count_round_trips(config, bench, workdir)
            print(f"counted {config.label}", flush=True)
    finally:
        poolers["plain"].set("log_connections", "0")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "counts": counts}, indent=1))
    report(configs, runs, counts)


if __name__ == "__main__":
    sys.exit(main())
