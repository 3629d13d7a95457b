"""A moto S3 (and SQS...) server process on a free loopback port, for tests of aioboto3 clients."""

import subprocess
import sys

import httpx

from tests.support.redis_server import free_port
from tests.support.wait import wait_until_sync

# moto accepts any credentials; boto needs some to sign requests.
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


class MotoServer:
    """``python -m moto.server`` in its own process; ``url`` is the endpoint to give clients."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        process = self.process

        def answering() -> bool:
            assert process.poll() is None, "moto exited"
            try:
                httpx.get(f"{self.url}/moto-api/data.json", timeout=1.0).raise_for_status()
            except httpx.HTTPError:
                return False
            return True

        try:
            wait_until_sync(answering, within=timeout, what="moto to answer")
        except BaseException:
            self.stop()
            raise

    def reset(self) -> None:
        """Forget every bucket, queue and object."""
        httpx.post(f"{self.url}/moto-api/reset", timeout=5.0).raise_for_status()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None
