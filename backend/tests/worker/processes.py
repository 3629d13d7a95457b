"""The worker tier as real processes: gunicorn-run worker app(s) and local sqsd daemons."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from app.config import Settings
from tests.conftest import TEST_JWT_SECRET
from tests.support.moto_server import MotoServer
from tests.support.sqs_server import (
    ManagedProcess,
    QueuePair,
    service_env,
    start_sqsd,
    start_worker,
)


def worker_env(
    settings: Settings, moto: MotoServer, queues: QueuePair, **extra: str
) -> dict[str, str]:
    """Environment of a worker process sharing ``settings``' database and data directory."""
    assert settings.database_url is not None
    return service_env(
        {
            "ENVIRONMENT": "development",
            "JWT_SECRET": TEST_JWT_SECRET,
            "DATABASE_URL": settings.database_url,
            "DATA_DIR": str(settings.data_dir),
            "QUEUE_BACKEND": "sqs",
            "AWS_ENDPOINT_URL": moto.url,
            "SQS_QUEUE_RESUME_PARSE": queues.name,
            "SQS_QUEUE_VECTOR_INDEX": queues.name,
            "SQS_QUEUE_EMAIL": queues.name,
            "RATE_LIMIT_ENABLED": "false",
            "DB_POOL_SIZE": "5",
            "LOG_LEVEL": "WARNING",
            **extra,
        }
    )


@contextmanager
def worker_tier(
    env: dict[str, str],
    queues: QueuePair,
    log_dir: Path,
    *,
    workers: int = 1,
    daemons: int = 1,
    concurrency: int = 10,
    sqsd_args: tuple[str, ...] = (),
) -> Iterator[list[ManagedProcess]]:
    """A gunicorn worker app (``workers`` processes) fed by ``daemons`` local sqsd instances
    (``sqsd_args`` are added to each daemon's command line)."""
    started: list[ManagedProcess] = []
    try:
        worker, url = start_worker(env, log_dir, workers=workers)
        started.append(worker)
        for _ in range(daemons):
            started.append(
                start_sqsd(
                    env, log_dir, queues.url, url, "--concurrency", str(concurrency), *sqsd_args
                )
            )
        yield started
    finally:
        # Daemons first, so no delivery is cut off by a stopped worker.
        for process in reversed(started):
            process.stop()


def child_pids(pid: int) -> list[int]:
    """The process ids of ``pid``'s children, exited ones not yet reaped (zombies) included."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()]
