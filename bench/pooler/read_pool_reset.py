"""What asyncpg's reset query costs the read pool: one listing query per acquire/release.

The app's read pool (app.database.create_read_pool) releases each connection with asyncpg's
default reset, `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;`, a round
trip (and, behind the pooler, a transaction of its own) after every read. This runs the job
listing's query on a one-connection pool, with that reset and with a no-op `reset=` hook (asyncpg
still rolls back a transaction left open), sequentially, in alternation, direct and through
PgBouncer. Per query: wall time, client CPU, and the server side's CPU (the backend's when
direct, PgBouncer's through it).
"""

import argparse
import asyncio
import statistics
import time

import asyncpg
from measure import cpu_seconds

SQL = (
    "SELECT id, title, company, location, job_type, description, skills, created_at FROM jobs "
    "WHERE active ORDER BY created_at DESC, id DESC LIMIT $1 OFFSET $2"
)


async def _no_reset(_connection: asyncpg.Connection) -> None:
    """Nothing session-scoped to undo."""


async def run(args: argparse.Namespace) -> None:
    pools: dict[str, tuple[asyncpg.Pool, int | None]] = {}
    for where, port in (("direct", 5432), ("PgBouncer", args.pgbouncer_port)):
        for label, reset in (("default reset", None), ("no-op reset", _no_reset)):
            pool = await asyncpg.create_pool(
                f"postgresql://postgres@127.0.0.1:{port}/{args.db}",
                min_size=1,
                max_size=1,
                statement_cache_size=100 if where == "direct" else 0,
                reset=reset,
            )
            server_pid = (
                await pool.fetchval("SELECT pg_backend_pid()")
                if where == "direct"
                else args.pgbouncer_pid
            )
            pools[f"{where}, {label}"] = (pool, server_pid)
    for pool, _ in pools.values():  # warm-up
        for _ in range(50):
            await pool.fetch(SQL, 21, 0)
    wall: dict[str, list[float]] = {label: [] for label in pools}
    cpu: dict[str, list[float]] = {label: [] for label in pools}
    server: dict[str, list[float]] = {label: [] for label in pools}
    for _ in range(args.rounds):
        for label, (pool, server_pid) in pools.items():
            client0, server0 = time.process_time(), cpu_seconds(server_pid) or 0.0
            start = time.perf_counter()
            for _ in range(args.queries):
                await pool.fetch(SQL, 21, 0)
            wall[label].append((time.perf_counter() - start) / args.queries * 1e6)
            cpu[label].append((time.process_time() - client0) / args.queries * 1e6)
            server[label].append(((cpu_seconds(server_pid) or 0.0) - server0) / args.queries * 1e6)
    for pool, _ in pools.values():
        await pool.close()
    print(
        f"\n## Read pool: one listing query per acquire/release ({args.rounds} x "
        f"{args.queries}, in alternation; medians of the rounds)\n"
    )
    print("| pool | wall us | client CPU us | server CPU us (backend / PgBouncer) |")
    print("|---|---|---|---|")
    for label in pools:
        print(
            f"| {label} | {statistics.median(wall[label]):,.0f} "
            f"| {statistics.median(cpu[label]):,.0f} | {statistics.median(server[label]):,.0f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", required=True)
    parser.add_argument("--pgbouncer-port", type=int, required=True)
    parser.add_argument("--pgbouncer-pid", type=int, required=True)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=6)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
