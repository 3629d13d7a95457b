"""A counting TCP proxy for the PostgreSQL wire protocol (bench/pooler's round-trip counts).

Sits between the app and Postgres or PgBouncer and counts, without changing a byte:

- connections: client connections opened (each one a login at the pooler or a new backend);
- round_trips: times the client sent something after the server had answered (the client
  waited for a reply), Terminate excluded; `setup_round_trips` are those of the startup
  phase (SSLRequest, StartupMessage);
- syncs: Sync and simple Query messages, i.e. ReadyForQuery replies (what PgBouncer's SHOW
  STATS calls queries); parses: Parse messages (statements prepared);
- transactions: ReadyForQuery replies with status idle, less the one after each login (each
  ends an explicit transaction or an autocommit statement, as PgBouncer counts them);
- statements by kind: the first word of each simple Query and Parse (BEGIN, COMMIT, SET, ...).

Runs its own event loop in a thread so a synchronous driver can use it. TLS is not parsed.
"""

import asyncio
import struct
import threading
from collections import Counter
from typing import Any

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_CANCEL_REQUEST = 80877102


class _Connection:
    """Parsing state of one proxied connection."""

    def __init__(self, counts: Counter[str]) -> None:
        self.counts = counts
        self.client_buffer = b""
        self.server_buffer = b""
        self.startup = True  # client messages have no type byte until the StartupMessage
        self.single_byte_replies = 0  # 'S'/'N' answers owed to SSLRequest/GSSENCRequest
        self.server_spoke = True  # the next client message starts a round trip
        self.logged_in = False

    def client_data(self, data: bytes) -> None:
        self.client_buffer += data
        while True:
            if self.startup:
                if len(self.client_buffer) < 8:
                    return
                (length,) = struct.unpack("!i", self.client_buffer[:4])
                if len(self.client_buffer) < length:
                    return
                (code,) = struct.unpack("!i", self.client_buffer[4:8])
                self.client_buffer = self.client_buffer[length:]
                self._round_trip(setup=True)
                if code in (_SSL_REQUEST, _GSSENC_REQUEST):
                    self.single_byte_replies += 1
                    self.counts["ssl_requests"] += 1
                elif code == _CANCEL_REQUEST:
                    self.counts["cancel_requests"] += 1
                else:
                    self.startup = False
                continue
            if len(self.client_buffer) < 5:
                return
            kind = self.client_buffer[:1]
            (length,) = struct.unpack("!i", self.client_buffer[1:5])
            if len(self.client_buffer) < length + 1:
                return
            body = self.client_buffer[5 : length + 1]
            self.client_buffer = self.client_buffer[length + 1 :]
            self._client_message(kind, body)

    def _round_trip(self, *, setup: bool = False) -> None:
        if self.server_spoke:
            self.server_spoke = False
            self.counts["round_trips"] += 1
            if setup:
                self.counts["setup_round_trips"] += 1

    def _client_message(self, kind: bytes, body: bytes) -> None:
        if kind == b"X":  # Terminate: sent without waiting for anything
            self.counts["terminates"] += 1
            return
        self._round_trip()
        if kind == b"Q":
            self.counts["syncs"] += 1
            self._statement(body.split(b"\0", 1)[0])
        elif kind == b"S":
            self.counts["syncs"] += 1
        elif kind == b"P":
            self.counts["parses"] += 1
            _name, _, rest = body.partition(b"\0")
            self._statement(rest.split(b"\0", 1)[0])
        elif kind == b"E":
            self.counts["executes"] += 1

    def _statement(self, text: bytes) -> None:
        words = text.strip().rstrip(b";").split(None, 1)
        first = words[0].decode(errors="replace").upper() if words else "(empty)"
        self.counts[f"sql {first}"] += 1

    def server_data(self, data: bytes) -> None:
        self.server_spoke = True
        self.server_buffer += data
        while True:
            if self.single_byte_replies:
                if not self.server_buffer:
                    return
                self.single_byte_replies -= 1
                self.server_buffer = self.server_buffer[1:]
                continue
            if len(self.server_buffer) < 5:
                return
            kind = self.server_buffer[:1]
            (length,) = struct.unpack("!i", self.server_buffer[1:5])
            if len(self.server_buffer) < length + 1:
                return
            body = self.server_buffer[5 : length + 1]
            self.server_buffer = self.server_buffer[length + 1 :]
            if kind == b"Z":
                if not self.logged_in:
                    self.logged_in = True
                elif body == b"I":
                    self.counts["transactions"] += 1


class WireCounter:
    """`with WireCounter(host, port) as counter:` proxies 127.0.0.1:counter.port to host:port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.counts: Counter[str] = Counter()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def __enter__(self) -> "WireCounter":
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        self.port = future.result(timeout=10)
        return self

    def __exit__(self, *_exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def snapshot(self) -> Counter[str]:
        """A copy of the counts so far (read between measurements)."""
        return Counter(dict(self.counts))

    async def _start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, client_reader: Any, client_writer: Any) -> None:
        self.counts["connections"] += 1
        connection = _Connection(self.counts)
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            _pump(client_reader, server_writer, connection.client_data),
            _pump(server_reader, client_writer, connection.server_data),
            return_exceptions=True,
        )


async def _pump(reader: Any, writer: Any, observe: Any) -> None:
    try:
        while data := await reader.read(65536):
            observe(data)
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()
