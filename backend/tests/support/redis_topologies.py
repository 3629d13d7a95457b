"""Private Redis Cluster and Sentinel deployments for tests, built from real redis-server processes.

Both start on free loopback ports, wait until they are usable, and clean up after themselves.
Never touches the machine's shared Redis.
"""

import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import redis

from tests.support.redis_server import RedisServer, free_port
from tests.support.wait import wait_until_sync


def _redis_binary(name: str) -> str:
    return shutil.which(name) or f"/usr/bin/{name}"


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is valid and free too."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


class RedisClusterNodes:
    """A Redis Cluster of `masters` primaries (no replicas), slots spread by redis-cli."""

    def __init__(self, masters: int = 3) -> None:
        self.nodes = [
            RedisServer(
                port=free_cluster_port(),
                extra_args=("--cluster-enabled", "yes", "--cluster-node-timeout", "5000"),
            )
            for _ in range(masters)
        ]

    @property
    def url(self) -> str:
        """A startup node; the client discovers the others."""
        return self.nodes[0].url

    def start(self, timeout: float = 30.0) -> None:
        for node in self.nodes:
            node.start()
        subprocess.run(
            [
                _redis_binary("redis-cli"),
                "--cluster",
                "create",
                *(f"127.0.0.1:{node.port}" for node in self.nodes),
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
        )
        self._wait_state_ok(timeout)

    def _wait_state_ok(self, timeout: float) -> None:
        for node in self.nodes:
            client = redis.Redis(port=node.port, socket_timeout=1.0)
            try:
                wait_until_sync(
                    lambda: client.cluster("info").get("cluster_state") == "ok",  # noqa: B023
                    within=timeout,
                    what="Redis Cluster to reach cluster_state:ok",
                )
            finally:
                client.close()

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()


class RedisSentinelSetup:
    """One master and one Sentinel monitoring it under `master_name` (quorum 1)."""

    def __init__(self, master_name: str = "mymaster") -> None:
        self.master_name = master_name
        self.master = RedisServer()
        self.sentinel_port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix=f"sentinel-{self.sentinel_port}-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def sentinel_hosts(self) -> str:
        """The REDIS_SENTINEL_HOSTS value."""
        return f"127.0.0.1:{self.sentinel_port}"

    @property
    def url(self) -> str:
        """REDIS_URL for sentinel mode (only db and credentials are read from it).

        Its host resolves nowhere, so a client that ignored the sentinels would fail loudly.
        """
        return "redis://sentinel-managed.invalid/0"

    def start(self, timeout: float = 20.0) -> None:
        self.master.start()
        config = self.workdir / "sentinel.conf"
        config.write_text(
            f"port {self.sentinel_port}\n"
            "bind 127.0.0.1\n"
            f"dir {self.workdir}\n"
            f"sentinel monitor {self.master_name} 127.0.0.1 {self.master.port} 1\n"
            f"sentinel down-after-milliseconds {self.master_name} 5000\n",
            encoding="utf-8",
        )
        self.process = subprocess.Popen(
            [_redis_binary("redis-server"), str(config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.sentinel_port, socket_timeout=0.5)

        def knows_the_master() -> bool:
            try:
                return bool(
                    client.execute_command(  # type: ignore[no-untyped-call]
                        "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name
                    )
                )
            except redis.ConnectionError:
                return False

        try:
            wait_until_sync(knows_the_master, within=timeout, what="Sentinel to start")
        finally:
            client.close()

    def cleanup(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None
        self.master.cleanup()
        shutil.rmtree(self.workdir, ignore_errors=True)
