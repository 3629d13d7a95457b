"""uvicorn processes on free loopback ports, for tests where several processes share state."""

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import httpx

from tests.support.redis_server import free_port
from tests.support.wait import wait_until_sync

BACKEND_DIR = Path(__file__).resolve().parents[2]


class UvicornProcesses:
    """`count` uvicorn processes serving `target` (an ASGI app import path), configured by `env`."""

    def __init__(
        self, target: str, count: int, env: Mapping[str, str], *, factory: bool = False
    ) -> None:
        self.target = target
        self.factory = factory
        self.ports = [free_port() for _ in range(count)]
        self.env = {**os.environ, **env}
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    def __enter__(self) -> "UvicornProcesses":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> "UvicornProcesses":
        """Start every process and wait until each answers /health."""
        try:
            for port in self.ports:
                command = [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    self.target,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--log-level",
                    "warning",
                    "--no-access-log",
                ]
                if self.factory:
                    command.append("--factory")
                self.processes.append(
                    subprocess.Popen(
                        command, cwd=BACKEND_DIR, env=self.env, stdout=subprocess.DEVNULL
                    )
                )
            self._wait_ready(timeout=30)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        for url, process in zip(self.urls, self.processes, strict=True):

            def healthy(url: str = url, process: subprocess.Popen[bytes] = process) -> bool:
                if process.poll() is not None:
                    raise RuntimeError(f"uvicorn on {url} exited with {process.returncode}")
                try:
                    return httpx.get(f"{url}/health", timeout=1).status_code == 200
                except httpx.TransportError:
                    return False

            wait_until_sync(healthy, within=timeout, what=f"uvicorn on {url} to start")

    def stop(self) -> None:
        """Terminate every process (killed if it does not exit within 15 s)."""
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
