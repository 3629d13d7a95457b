"""Rate-limit benchmark: bare FastAPI, slowapi, fastapi-limiter 0.2, naive EVALSHA middleware, ours.

Method: each variant is one uvicorn worker (uvloop, httptools) pinned to CPU 0; wrk (1 thread, 64
connections) and a private redis-server share CPU 1. wrk cycles X-Forwarded-For through 10,000
client addresses, so every request is admitted after a full per-client decision. Variants run in
alternation (ABCDE ABCDE) so drift on a shared machine hits them alike; Redis is flushed before
each run. Per run: requests/s and p50/p99 from wrk, server CPU per request from /proc, Redis
commands per request from INFO. Writes RESULTS.md beside this file.

Usage (from the repository root):
    .venv/bin/python bench/rate_limit/run.py [seconds-per-run] [rounds]
Needs wrk (apt-get install -y wrk) and bench/requirements.txt installed in .venv.
"""

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import redis

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "backend"))

from tests.support.redis_server import RedisServer, free_port  # noqa: E402

VARIANTS = ["bare", "slowapi", "fastapi_limiter", "naive", "ours"]
CONNECTIONS = 64
CLK_TCK = os.sysconf("SC_CLK_TCK")

WRK_SCRIPT = """
counter = 0
request = function()
  counter = counter + 1
  local c = counter % 10000
  wrk.headers["X-Forwarded-For"] = "198.18." .. math.floor(c / 256) .. "." .. (c % 256)
  return wrk.format(nil, "/api/jobs")
end
"""


@dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float
    redis_calls: float
    script_calls: float
    non_2xx: int


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def to_ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(port: int, seconds: int, script: Path) -> tuple[float, float, float, int, int]:
    out = subprocess.run(
        [
            "taskset",
            "-c",
            "1",
            "wrk",
            "-t1",
            f"-c{CONNECTIONS}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}/api/jobs",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)", out, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)", out, re.MULTILINE)
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return (
        rps,
        to_ms(*p50.groups()),  # type: ignore[union-attr]
        to_ms(*p99.groups()),  # type: ignore[union-attr]
        total,
        int(non_2xx.group(1)) if non_2xx else 0,
    )


def script_calls(store: redis.Redis) -> int:
    """EVAL/EVALSHA calls so far: the round trips of script-based limiters."""
    stats = store.info("commandstats")
    names = ("cmdstat_evalsha", "cmdstat_eval")
    return sum(int(stats.get(name, {}).get("calls", 0)) for name in names)


def wait_up(port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/jobs", timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def main() -> None:
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    workdir = Path(tempfile.mkdtemp(prefix="bench-rl-"))
    script = workdir / "clients.lua"
    script.write_text(WRK_SCRIPT)
    redis_server = RedisServer()
    redis_server.start()
    os.sched_setaffinity(redis_server.process.pid, {1})  # Redis beside wrk, off the app's CPU
    redis_port = redis_server.port
    redis_url = redis_server.url
    store = redis.Redis(port=redis_port)
    servers: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
    try:
        for variant in VARIANTS:
            port = free_port()
            env = {
                **os.environ,
                "BENCH_VARIANT": variant,
                "BENCH_REDIS_URL": redis_url,
                "PYTHONPATH": f"{ROOT / 'backend'}:{HERE}",
            }
            servers[variant] = (
                port,
                subprocess.Popen(
                    [
                        "taskset",
                        "-c",
                        "0",
                        str(ROOT / ".venv/bin/uvicorn"),
                        "bench_apps:app",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--loop",
                        "uvloop",
                        "--http",
                        "httptools",
                        "--no-access-log",
                        "--log-level",
                        "warning",
                    ],
                    cwd=ROOT / "backend",
                    env=env,
                ),
            )
        for port, _ in servers.values():
            wait_up(port)
            wrk(port, 2, script)  # warm-up
        results: dict[str, list[Run]] = {variant: [] for variant in VARIANTS}
        for round_number in range(1, rounds + 1):
            for variant, (port, process) in servers.items():
                store.flushall()
                commands_before = int(store.info("stats")["total_commands_processed"])
                scripts_before = script_calls(store)
                ticks_before = cpu_ticks(process.pid)
                rps, p50, p99, total, non_2xx = wrk(port, seconds, script)
                ticks = cpu_ticks(process.pid) - ticks_before
                scripts = script_calls(store) - scripts_before
                commands_after = int(store.info("stats")["total_commands_processed"])
                commands = commands_after - commands_before - 3  # minus the INFO calls made here
                run = Run(
                    rps=rps,
                    p50_ms=p50,
                    p99_ms=p99,
                    cpu_us=ticks / CLK_TCK / total * 1e6,
                    redis_calls=commands / total,
                    script_calls=scripts / total,
                    non_2xx=non_2xx,
                )
                results[variant].append(run)
                print(f"round {round_number} {variant:16s} {run}", flush=True)
        write_results(results, seconds, rounds)
    finally:
        for _, process in servers.values():
            process.terminate()
        for _, process in servers.values():
            process.wait(timeout=15)
        store.close()
        redis_server.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


def write_results(results: dict[str, list[Run]], seconds: int, rounds: int) -> None:
    def mean(variant: str, field: str) -> float:
        return statistics.median(getattr(run, field) for run in results[variant])

    made = f"{datetime.now(UTC):%Y-%m-%d %H:%M}"
    bare_rps = mean("bare", "rps")
    bare_p99 = mean("bare", "p99_ms")
    lines = [
        "# Rate-limit benchmark",
        "",
        f"Made by `bench/rate_limit/run.py {seconds} {rounds}` on {made} UTC:",
        "one uvicorn worker (uvloop, httptools) on CPU 0, wrk -t1 and redis-server on CPU 1,",
        f"{CONNECTIONS} connections, 10,000 client addresses, every request admitted. Median of",
        f"{rounds} alternating runs of {seconds} s per variant. req/s per CPU-s = 1 / server CPU",
        "time per request: the throughput one dedicated core would give, the figure least moved",
        "by other load on this shared 2-core machine.",
        "",
        (
            "| variant | req/s | x bare | p50 ms | p99 ms | p99 x bare | CPU us/req "
            "| req/s per CPU-s | x bare | EVALSHA/req | Redis cmds/req | non-2xx |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for variant in VARIANTS:
        rps = mean(variant, "rps")
        p99 = mean(variant, "p99_ms")
        lines.append(
            f"| {variant} | {rps:,.0f} | {rps / bare_rps:.2f} | {mean(variant, 'p50_ms'):.2f} "
            f"| {p99:.2f} | {p99 / bare_p99:.2f} | {mean(variant, 'cpu_us'):.0f} "
            f"| {1e6 / mean(variant, 'cpu_us'):,.0f} "
            f"| {mean('bare', 'cpu_us') / mean(variant, 'cpu_us'):.2f} "
            f"| {mean(variant, 'script_calls'):.3f} | {mean(variant, 'redis_calls'):.3f} "
            f"| {sum(r.non_2xx for r in results[variant])} |"
        )
    ours = mean("ours", "rps")
    lines += [
        "",
        (
            f"Throughput: ours / slowapi = {ours / mean('slowapi', 'rps'):.2f}x; "
            f"ours / fastapi-limiter = {ours / mean('fastapi_limiter', 'rps'):.2f}x; "
            f"ours / naive EVALSHA = {ours / mean('naive', 'rps'):.2f}x; "
            f"ours p99 / bare p99 = {mean('ours', 'p99_ms') / bare_p99:.2f}x."
        ),
        (
            "CPU per request: "
            + "; ".join(
                f"{peer} / ours = {mean(peer, 'cpu_us') / mean('ours', 'cpu_us'):.2f}x"
                for peer in ("slowapi", "fastapi_limiter", "naive")
            )
            + "."
        ),
        "",
        "Redis cmds/req counts every command Redis executed, including those run inside scripts;",
        "EVALSHA/req counts the script calls, i.e. the limiter's round trips to Redis.",
        "",
        "Per run:",
        "",
    ]
    for variant in VARIANTS:
        for run in results[variant]:
            lines.append(
                f"- {variant}: {run.rps:,.0f} req/s, p50 {run.p50_ms:.2f} ms, "
                f"p99 {run.p99_ms:.2f} ms, {run.cpu_us:.0f} us CPU/req, "
                f"{run.script_calls:.3f} EVALSHA/req, {run.redis_calls:.3f} Redis cmds/req"
            )
    (HERE / "RESULTS.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
