"""Request bodies over MAX_REQUEST_BODY_BYTES, against a real uvicorn process over raw HTTP/1.1:
refused by Content-Length before any of the body is sent, and mid-stream for chunked bodies
that never end (so the answer cannot have waited for the rest)."""

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TEST_JWT_SECRET
from tests.support.uvicorn_processes import UvicornProcesses
from tests.support.wait import LOADED_MACHINE_MARGIN

LIMIT = 4096
CHUNK = b"x" * 1024


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory, postgres_url: str) -> Iterator[int]:
    data_dir: Path = tmp_path_factory.mktemp("body-limit")
    env = {
        "ENVIRONMENT": "development",
        "JWT_SECRET": TEST_JWT_SECRET,
        "DATABASE_URL": postgres_url,
        "DATA_DIR": str(data_dir),
        "RATE_LIMIT_ENABLED": "false",
        "CACHE_ENABLED": "false",
        "MAX_REQUEST_BODY_BYTES": str(LIMIT),
        "LOG_LEVEL": "WARNING",
    }
    with UvicornProcesses("app.main:app", 1, env) as processes:
        yield processes.ports[0]


def exchange(port: int, head: str, body: list[bytes]) -> tuple[int, dict[str, str], bytes]:
    """Send `head` and the `body` pieces as they are, then read one response (status, headers,
    body) without sending anything more."""
    with socket.create_connection(("127.0.0.1", port), timeout=LOADED_MACHINE_MARGIN) as sock:
        sock.sendall(head.encode("latin-1") + b"\r\n")
        for piece in body:
            sock.sendall(piece)
        received = b""
        while b"\r\n\r\n" not in received:
            data = sock.recv(65536)
            assert data, f"connection closed before a response: {received!r}"
            received += data
        raw_head, content = received.split(b"\r\n\r\n", 1)
        status_line, *header_lines = raw_head.decode("latin-1").split("\r\n")
        headers = {
            name.strip().lower(): value.strip()
            for name, value in (line.split(":", 1) for line in header_lines)
        }
        while len(content) < int(headers["content-length"]):
            data = sock.recv(65536)
            assert data, "connection closed mid-response"
            content += data
    return int(status_line.split()[1]), headers, content


def request_head(path: str, *headers: str) -> str:
    lines = [f"POST {path} HTTP/1.1", "Host: test", "Content-Type: application/json", *headers]
    return "\r\n".join(lines) + "\r\n"


def chunked(*pieces: bytes, end: bool) -> list[bytes]:
    frames = [b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces]
    return [*frames, b"0\r\n\r\n"] if end else frames


def assert_too_large(status: int, headers: dict[str, str], body: bytes) -> None:
    assert status == 413
    assert headers["connection"] == "close"
    assert json.loads(body) == {
        "error": {
            "code": "payload_too_large",
            "message": f"The request body must be at most {LIMIT // 1024} KiB.",
        }
    }


def test_a_declared_length_over_the_limit_is_refused_before_the_body(port: int) -> None:
    # Ten megabytes announced, none sent: the answer cannot have waited for them.
    head = request_head("/api/auth/login", f"Content-Length: {10 * 1024 * 1024}")
    assert_too_large(*exchange(port, head, []))


def test_a_chunked_body_is_refused_once_it_passes_the_limit(port: int) -> None:
    # Five KiB of a body that never ends: the answer comes mid-stream.
    head = request_head("/api/auth/login", "Transfer-Encoding: chunked")
    assert_too_large(*exchange(port, head, chunked(*[CHUNK] * 5, end=False)))


def test_bodies_within_the_limit_reach_the_route(port: int) -> None:
    login = json.dumps({"email": "nobody@example.com", "password": "x" * 100}).encode()
    padded = login[:-1] + b" " * (LIMIT - len(login) - 1) + b"}"
    assert len(padded) == LIMIT - 1
    by_length = exchange(
        port, request_head("/api/auth/login", f"Content-Length: {len(padded)}"), [padded]
    )
    by_chunks = exchange(
        port,
        request_head("/api/auth/login", "Transfer-Encoding: chunked"),
        chunked(padded[:2000], padded[2000:], end=True),
    )
    # The route read and judged the body: wrong credentials, not a size refusal.
    assert by_length[0] == 401
    assert by_chunks[0] == 401


def test_the_resume_upload_keeps_its_own_larger_limit(port: int) -> None:
    # Over the JSON cap, far under MAX_RESUME_BYTES: the route answers (no token: 401), not 413.
    head = request_head("/api/profile/resume", f"Content-Length: {LIMIT * 4}")
    status, _, body = exchange(port, head, [b"x" * (LIMIT * 4)])
    assert status == 401, body
