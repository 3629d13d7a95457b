"""A real gunicorn master (our gunicorn.conf.py) on a free loopback port (multi-process tests)."""

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from tests.support.redis_server import free_port
from tests.support.wait import wait_until_sync

REPO_ROOT = Path(__file__).resolve().parents[3]
GUNICORN = Path(sys.executable).parent / "gunicorn"
ROLLING_RESTART = REPO_ROOT / "scripts" / "rolling_restart.sh"
TEST_JWT_SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"


class GunicornServer:
    """`gunicorn --config gunicorn.conf.py <app>` started from the repository root."""

    def __init__(
        self,
        app: str,
        *,
        database_url: str,
        workers: int = 2,
        extra_args: tuple[str, ...] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="gunicorn-ops-"))
        self.metrics_dir = self.workdir / "metrics"
        self.log_path = self.workdir / "gunicorn.log"
        self.started_file = self.workdir / "started.txt"
        self.release_file = self.workdir / "release"
        self.app = app
        self.workers = workers
        self.extra_args = extra_args
        self.env = {
            **os.environ,
            "GUNICORN_BIND": f"127.0.0.1:{self.port}",
            "GUNICORN_WORKERS": str(workers),
            "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
            "DATABASE_URL": database_url,
            "JWT_SECRET": TEST_JWT_SECRET,
            "ENVIRONMENT": "development",
            "LOG_FORMAT": "json",
            "RATE_LIMIT_ENABLED": "false",
            "DATA_DIR": str(self.workdir / "data"),
            "OPS_TEST_STARTED_FILE": str(self.started_file),
            "OPS_TEST_RELEASE_FILE": str(self.release_file),
            "GUNICORN_READY_DIR": str(self.workdir),
            **(env or {}),
        }
        if not env or "REDIS_URL" not in env:
            self.env.pop("REDIS_URL", None)  # the machine's Redis is not the test's
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0, attempts: int = 3) -> None:
        """Start and wait until every worker finished its startup. A free port can be taken by
        another process before gunicorn binds it: then try again on a new one."""
        for attempt in range(attempts):
            try:
                self._start(timeout)
                return
            except RuntimeError:
                if attempt == attempts - 1 or "Connection in use" not in self.log_text():
                    raise
                self.port = free_port()
                self.env["GUNICORN_BIND"] = f"127.0.0.1:{self.port}"

    def _start(self, timeout: float) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [str(GUNICORN), "--config", "gunicorn.conf.py", *self.extra_args, self.app],
            cwd=REPO_ROOT,
            env=self.env,
            stdout=log,
            stderr=log,
        )
        log.close()
        wait_until_sync(self._healthy, within=timeout, what="gunicorn to answer /health")
        wait_until_sync(
            lambda: self.messages().count("Application startup complete.") >= self.workers,
            within=timeout,
            what="every worker to finish its lifespan startup",
        )

    def _healthy(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"gunicorn exited early:\n{self.log_text()}")
        try:
            return httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    @property
    def pid(self) -> int:
        """The master's pid."""
        assert self.process is not None
        return self.process.pid

    def rolling_restart(self, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run scripts/rolling_restart.sh against this master and wait for it to finish."""
        return subprocess.run(
            [str(ROLLING_RESTART), str(self.pid)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float = 60.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_records(self) -> list[dict[str, Any]]:
        """The JSON log lines of master and workers (other lines skipped)."""
        records = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue
        return records

    def messages(self) -> list[str]:
        return [str(record.get("message")) for record in self.log_records()]

    def started_request_ids(self) -> list[str]:
        if not self.started_file.exists():
            return []
        return self.started_file.read_text(encoding="utf-8").split()

    def booted_workers(self) -> list[int]:
        """The pids of every worker the master has booted so far, oldest first."""
        prefix = "Booting worker with pid: "
        return [
            int(message[len(prefix) :]) for message in self.messages() if message.startswith(prefix)
        ]

    def metrics(self) -> str:
        response = httpx.get(f"{self.url}/metrics", timeout=5.0)
        response.raise_for_status()
        return response.text


def process_gone(pid: int) -> bool:
    """True once no process has this pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def sample(metrics_text: str, name: str, labels: Mapping[str, str] | None = None) -> float | None:
    """The value of one sample in Prometheus text (None when absent)."""
    wanted = labels or {}
    for line in metrics_text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        metric, _, label_text = series.partition("{")
        if metric != name:
            continue
        found = dict(
            part.split("=", 1) for part in label_text.rstrip("}").split(",") if "=" in part
        )
        found = {key: val.strip('"') for key, val in found.items()}
        if all(found.get(key) == val for key, val in wanted.items()):
            return float(value)
    return None
