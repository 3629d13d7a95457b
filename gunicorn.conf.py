"""gunicorn settings for the web and worker tiers (Procfile.web, Procfile.worker).

Run from the repository root: `gunicorn --config gunicorn.conf.py app.main:app`. Values come from
the environment so one file serves both tiers and local runs:

  GUNICORN_BIND              127.0.0.1:8000 (behind the instance's nginx)
  GUNICORN_WORKERS           worker processes (else WEB_CONCURRENCY, else 2 x CPUs, at most 8)
  GUNICORN_TIMEOUT           seconds a worker may stay silent before the master kills it (60)
  GUNICORN_GRACEFUL_TIMEOUT  seconds to drain on SIGTERM/HUP before SIGKILL (30); keep it
                             below GUNICORN_TIMEOUT, the master does not watch draining workers
  GUNICORN_KEEPALIVE         idle keep-alive seconds (5)
  PROMETHEUS_MULTIPROC_DIR   metrics directory shared by the workers (a private temp dir)
  GUNICORN_READY_DIR         where the master keeps its workers' readiness files (/tmp): a
                             worker creates <dir>/hiring-pro-gunicorn-<master pid>/<its pid>
                             once it accepts connections; scripts/rolling_restart.sh waits on it

This file is read again on HUP (which replaces all workers at once, see DEPLOY.md), so it must
stay free of side effects other than the environment defaults; one-time work goes in
`on_starting`.
"""

import os
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
BACKEND = ROOT / "backend"


def _int_env(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


# prometheus_client picks its multiprocess mode when first imported, so the variable must exist
# before any worker imports the app (workers are forked from this process and inherit it).
os.environ.setdefault(
    "PROMETHEUS_MULTIPROC_DIR",
    str(Path(tempfile.gettempdir()) / f"hiring-pro-metrics-{os.getuid()}"),
)
MULTIPROC_DIR = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
# The logging setup below imports the app's metrics module in the master; its (unused) files
# need the directory. on_starting empties it before any worker starts.
MULTIPROC_DIR.mkdir(parents=True, exist_ok=True)

chdir = str(BACKEND)  # app.main / app.worker_app import from here
bind = [os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")]
workers = _int_env(
    "GUNICORN_WORKERS", _int_env("WEB_CONCURRENCY", min(2 * (os.cpu_count() or 1), 8))
)
worker_class = "app.gunicorn_worker.UvicornWorker"
timeout = _int_env("GUNICORN_TIMEOUT", 60)
graceful_timeout = _int_env("GUNICORN_GRACEFUL_TIMEOUT", 30)
keepalive = _int_env("GUNICORN_KEEPALIVE", 5)
# The ALB and nginx in front add X-Forwarded-For; the app reads it itself (TRUSTED_PROXY_COUNT).
forwarded_allow_ips = "127.0.0.1"
# The app writes one access line per request (with the route template); no second one here.
accesslog = None
# gunicorn 25+ opens a control socket at one default path (~/.gunicorn/gunicorn.ctl) that every
# master on the host binds; nothing here uses it, and parallel masters would fight over it.
control_socket_disable = True


def _logconfig() -> dict[str, object]:
    import sys

    if str(BACKEND) not in sys.path:
        sys.path.insert(0, str(BACKEND))
    from app.observability.logging import gunicorn_logconfig, resolve_format

    level = os.environ.get("LOG_LEVEL", "INFO").upper()
    log_format = resolve_format(
        os.environ.get("LOG_FORMAT", "auto").lower(),
        os.environ.get("ENVIRONMENT", "development").lower(),
    )
    return gunicorn_logconfig(level, log_format)


logconfig_dict = _logconfig()


def ready_dir(master_pid: int) -> Path:
    """The readiness files of one master's workers (scripts/rolling_restart.sh: same path)."""
    root = Path(os.environ.get("GUNICORN_READY_DIR", "/tmp"))
    return root / f"hiring-pro-gunicorn-{master_pid}"


def on_starting(server: object) -> None:
    """Once per master start (not on HUP): empty the metrics directory of earlier runs, and
    start with an empty readiness directory (a dead master's pid may have been reused)."""
    shutil.rmtree(MULTIPROC_DIR, ignore_errors=True)
    MULTIPROC_DIR.mkdir(parents=True, exist_ok=True)
    ready = ready_dir(os.getpid())
    shutil.rmtree(ready, ignore_errors=True)
    ready.mkdir(parents=True, exist_ok=True)


def post_fork(server: object, worker: object) -> None:
    """In each new worker: the file it creates once it accepts connections."""
    from app.gunicorn_worker import UvicornWorker

    if isinstance(worker, UvicornWorker):  # not with another --worker-class
        worker.ready_marker = ready_dir(os.getppid()) / str(os.getpid())


def child_exit(server: object, worker: object) -> None:
    """A worker died (restart, crash, HUP): drop its live gauges from /metrics and its
    readiness file (its pid may be reused)."""
    from app.observability.metrics import mark_process_dead

    pid = int(getattr(worker, "pid", 0))
    mark_process_dead(pid, MULTIPROC_DIR)
    (ready_dir(os.getpid()) / str(pid)).unlink(missing_ok=True)


def on_exit(server: object) -> None:
    """The master stops: its readiness directory goes with it."""
    shutil.rmtree(ready_dir(os.getpid()), ignore_errors=True)
