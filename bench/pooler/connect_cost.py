"""What opening one connection costs: direct, through PgBouncer, and through PgBouncer with TLS.

Sequential connect + close, statement_cache_size=0, targets in alternation (block by block).
Per connection: wall time (median and mean), client CPU (this process), PgBouncer CPU, and the
CPU of the postmaster and its reaped children (a direct connection forks a backend that exits on
close; other clients of the shared Postgres add noise here, which the pooler rows show).
"app NullPool checkout" is what configuration b pays per transaction on top: the app's own
engine (app.database.create_engine, USE_EXTERNAL_POOLER=true) opening and closing a connection,
which includes SQLAlchemy's on-connect work (JSON/JSONB codecs: type introspection queries).
"""

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
from measure import CLK_TCK, cpu_seconds
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.database import create_engine

CHILDREN_FIELDS = (13, 14)  # cutime, cstime, counted after the ")" of /proc/PID/stat


def postmaster_cpu(pid: int) -> float:
    """utime+stime of the postmaster and of its reaped children (exited backends)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = cpu_seconds(pid) or 0.0
    children = sum(int(fields[index]) for index in CHILDREN_FIELDS)
    return own + children / CLK_TCK


def asyncpg_target(port: int, db: str, ssl: object) -> Callable[[], Awaitable[None]]:
    dsn = f"postgresql://postgres@127.0.0.1:{port}/{db}"

    async def connect() -> None:
        connection = await asyncpg.connect(dsn, statement_cache_size=0, ssl=ssl)
        await connection.close()

    return connect


def engine_target(engine: AsyncEngine) -> Callable[[], Awaitable[None]]:
    async def checkout() -> None:
        async with engine.connect():
            pass

    return checkout


def app_engine(port: int, db: str, ssl: bool) -> AsyncEngine:
    query = "?ssl=require" if ssl else ""
    settings = Settings(
        database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{port}/{db}{query}",
        use_external_pooler=True,
        jwt_secret="bench-pooler-secret-bench-pooler-secret-000",
    )
    return create_engine(settings)


async def run(args: argparse.Namespace) -> None:
    engines = [app_engine(args.pgbouncer_port, args.db, ssl=False)]
    targets: list[tuple[str, Callable[[], Awaitable[None]], int | None]] = [
        (
            "direct, asyncpg default sslmode (prefer: SSLRequest refused)",
            asyncpg_target(5432, args.db, None),
            None,
        ),
        ("direct, ssl disabled", asyncpg_target(5432, args.db, False), None),
        (
            "PgBouncer, asyncpg default sslmode (prefer: SSLRequest refused)",
            asyncpg_target(args.pgbouncer_port, args.db, None),
            args.pgbouncer_pid,
        ),
        (
            "PgBouncer, ssl disabled",
            asyncpg_target(args.pgbouncer_port, args.db, False),
            args.pgbouncer_pid,
        ),
        (
            "app NullPool checkout through PgBouncer (what b pays per transaction)",
            engine_target(engines[0]),
            args.pgbouncer_pid,
        ),
    ]
    if args.tls_port:
        engines.append(app_engine(args.tls_port, args.db, ssl=True))
        targets += [
            (
                "PgBouncer with TLS (client_tls_sslmode=require), ssl=require",
                asyncpg_target(args.tls_port, args.db, "require"),
                args.tls_pid,
            ),
            (
                "app NullPool checkout through PgBouncer with TLS",
                engine_target(engines[1]),
                args.tls_pid,
            ),
        ]
    for _, target, _ in targets:  # warm-up: first connects, the engines' dialect initialise
        for _ in range(5):
            await target()
    samples: dict[str, list[float]] = {label: [] for label, _, _ in targets}
    cpu: dict[str, list[float]] = {label: [0.0, 0.0, 0.0] for label, _, _ in targets}
    per_block = args.connects // args.rounds
    for _ in range(args.rounds):
        for label, target, pooler_pid in targets:
            client0 = time.process_time()
            pooler0 = (cpu_seconds(pooler_pid) or 0.0) if pooler_pid else 0.0
            postgres0 = postmaster_cpu(args.postmaster_pid)
            for _ in range(per_block):
                start = time.perf_counter()
                await target()
                samples[label].append(time.perf_counter() - start)
            cpu[label][0] += time.process_time() - client0
            if pooler_pid:
                cpu[label][1] += (cpu_seconds(pooler_pid) or 0.0) - pooler0
            cpu[label][2] += postmaster_cpu(args.postmaster_pid) - postgres0
    for engine in engines:
        await engine.dispose()
    print(f"\n## Opening one connection ({per_block * args.rounds} sequential, in alternation)\n")
    print(
        "| connection | wall ms median | wall ms mean | client CPU us | PgBouncer CPU us "
        "| postmaster + exited backends CPU us |"
    )
    print("|---|---|---|---|---|---|")
    for label, _, pooler_pid in targets:
        n = len(samples[label])
        client, pooler, postgres = (value / n * 1e6 for value in cpu[label])
        print(
            f"| {label} | {statistics.median(samples[label]) * 1e3:.2f} "
            f"| {statistics.fmean(samples[label]) * 1e3:.2f} | {client:.0f} "
            f"| {f'{pooler:.0f}' if pooler_pid else '-'} | {postgres:.0f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", required=True)
    parser.add_argument("--pgbouncer-port", type=int, required=True)
    parser.add_argument("--pgbouncer-pid", type=int, required=True)
    parser.add_argument("--tls-port", type=int)
    parser.add_argument("--tls-pid", type=int)
    parser.add_argument("--postmaster-pid", type=int, required=True)
    parser.add_argument("--connects", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
