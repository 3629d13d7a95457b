"""A loopback TCP forwarder that can be taken down and brought back on the same port.

Models an endpoint outage (a service's load balancer or network path going away) while the
service behind it keeps its state: the fault suite puts it in front of moto, whose queues live
in memory and would vanish with a restart of moto itself, as real SQS's stored messages do not.
"""

import contextlib
import selectors
import socket
import struct
import threading

from tests.support.redis_server import free_port

_CHUNK = 65536


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `target_port`; `down()` refuses and cuts connections,
    `up()` accepts again."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._accepting: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        # Directions whose bytes are dropped instead of forwarded ("to_server", "to_client").
        self.muted: set[str] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        """Listen on the proxy's port (again)."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self._listener = listener
        self._accepting = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._accepting.start()

    def down(self) -> None:
        """Stop listening (new connections are refused) and reset every open connection."""
        listener, self._listener = self._listener, None
        if listener is not None:
            # shutdown() wakes the accept() blocked in the other thread; close() alone does not.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        if self._accepting is not None:
            self._accepting.join(timeout=10)
        with self._lock:
            connections, self._connections = self._connections, set()
        for connection in connections:
            # Linger 0: closed with a reset, as a vanished endpoint looks to its clients;
            # shutdown() wakes the thread piping it, which then closes both ends.
            with contextlib.suppress(OSError):
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                connection.shutdown(socket.SHUT_RDWR)
        self.muted.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._connections.update((client, server))
            threading.Thread(target=self._pipe, args=(client, server), daemon=True).start()

    def mute(self, direction: str) -> None:
        """Drop instead of forward what is sent "to_server" or "to_client" from now on (a
        request or an answer lost on the way), until down()."""
        self.muted.add(direction)

    def _pipe(self, client: socket.socket, server: socket.socket) -> None:
        peers = {client: server, server: client}
        direction = {client: "to_server", server: "to_client"}
        with selectors.DefaultSelector() as selector:
            for sock in peers:
                selector.register(sock, selectors.EVENT_READ)
            try:
                while True:
                    for key, _ in selector.select():
                        source = key.fileobj
                        assert isinstance(source, socket.socket)
                        data = source.recv(_CHUNK)
                        if not data:
                            return
                        if direction[source] not in self.muted:
                            peers[source].sendall(data)
            except OSError:
                return
            finally:
                with self._lock:
                    self._connections.difference_update(peers)
                for sock in peers:
                    sock.close()
