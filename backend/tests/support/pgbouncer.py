"""Private PgBouncer processes in transaction mode: the suite's stand-in for Supavisor port 6543."""

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from tests.support.redis_server import free_port
from tests.support.wait import wait_until_sync

POSTGRES_HOST = "127.0.0.1"
POSTGRES_PORT = 5432


class PgBouncer:
    """One pgbouncer process on a loopback port, pooling every database of the local Postgres.

    Transaction mode with `pool_size` server connections per database/user pair, like Supavisor's
    transaction port: a client's transactions may each run on a different server connection,
    nothing session-scoped survives a transaction, and prepared statements are not tracked.
    Can be stopped and restarted on the same port (a pooler restart under load).
    """

    def __init__(
        self, *, pool_size: int = 5, query_wait_timeout: int = 10, port: int | None = None
    ) -> None:
        self.port = port or free_port()
        self.pool_size = pool_size
        self.query_wait_timeout = query_wait_timeout
        self.workdir = Path(tempfile.mkdtemp(prefix=f"pgbouncer-{self.port}-"))
        self.process: subprocess.Popen[bytes] | None = None

    def url_for(self, direct_url: str) -> str:
        """The SQLAlchemy URL of the same database, through this pooler."""
        return direct_url.replace(f"@{POSTGRES_HOST}:{POSTGRES_PORT}/", f"@127.0.0.1:{self.port}/")

    def _write_config(self) -> Path:
        (self.workdir / "users.txt").write_text('"postgres" ""\n')
        config = self.workdir / "pgbouncer.ini"
        config.write_text(
            "\n".join(
                [
                    "[databases]",
                    f"* = host={POSTGRES_HOST} port={POSTGRES_PORT}",
                    "[pgbouncer]",
                    "listen_addr = 127.0.0.1",
                    f"listen_port = {self.port}",
                    f"unix_socket_dir = {self.workdir}",
                    "auth_type = trust",
                    f"auth_file = {self.workdir / 'users.txt'}",
                    "pool_mode = transaction",
                    f"default_pool_size = {self.pool_size}",
                    "min_pool_size = 0",
                    "reserve_pool_size = 0",
                    "max_client_conn = 2000",
                    # A client waits this long for a server connection, then gets an error.
                    f"query_wait_timeout = {self.query_wait_timeout}",
                    # PgBouncer 1.21+ can track prepared statements; Supavisor's transaction
                    # mode is modelled without it.
                    "server_reset_query =",
                    "ignore_startup_parameters = extra_float_digits",
                    f"logfile = {self.workdir / 'pgbouncer.log'}",
                    f"pidfile = {self.workdir / 'pgbouncer.pid'}",
                    "",
                ]
            )
        )
        return config

    def start(self, timeout: float = 10.0) -> None:
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        config = self._write_config()
        # PgBouncer refuses to run as root: as root, run it as the postgres user.
        user = "postgres" if os.geteuid() == 0 else None
        if user is not None:
            shutil.chown(self.workdir, user)
        self.process = subprocess.Popen(
            [binary, "--quiet", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            user=user,
            group=user,
        )
        wait_until_sync(self._answering, within=timeout, what="pgbouncer to accept connections")

    def _answering(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def kill(self) -> None:
        """Stop at once (SIGKILL): clients and server connections are cut mid-transaction."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
