"""A client that disconnects in the middle of a resume upload is not a server error: against a
real gunicorn process, half a multipart body is sent on a raw socket which is then closed; the
server logs it at INFO at most (no ERROR line, no 500) and stays healthy."""

import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.main import create_app
from tests.conftest import make_settings
from tests.support.apps import client_for
from tests.support.factories import candidate_token
from tests.support.gunicorn_server import GunicornServer
from tests.support.wait import wait_until_sync

pytestmark = pytest.mark.slow

BOUNDARY = "cut-off-boundary"


def _access_lines(server: GunicornServer) -> list[dict[str, Any]]:
    return [r for r in server.log_records() if r.get("route") == "/api/profile/resume"]


async def test_upload_cut_off_mid_body_is_not_an_error(tmp_path: Path, database_url: str) -> None:
    app = create_app(make_settings(tmp_path / "seed", database_url=database_url))
    async with app.router.lifespan_context(app), client_for(app) as client:
        token = await candidate_token(client)
    server = GunicornServer(
        "app.main:app", database_url=database_url, workers=1, env={"LOG_LEVEL": "INFO"}
    )
    server.start()
    try:
        part = (
            f"--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="file"; filename="cv.txt"\r\n'
            "Content-Type: text/plain\r\n\r\n"
        ).encode() + b"Jordan Rivers, Python developer. " * 200
        head = (
            "POST /api/profile/resume HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{server.port}\r\n"
            f"Authorization: Bearer {token}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            # Promise far more than is sent: the server is still reading when the socket closes.
            f"Content-Length: {len(part) * 10}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            raw.sendall(head + part)
        wait_until_sync(
            lambda: _access_lines(server), within=30, what="the access line of the cut-off upload"
        )
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            assert (await http.get("/health")).status_code == 200
    finally:
        server.stop()
    records = server.log_records()
    assert [r for r in records if r.get("level") in ("ERROR", "CRITICAL")] == []
    assert [line["status"] for line in _access_lines(server)] != [500]
    assert any(
        r.get("logger") == "app.error_handlers" and r.get("level") == "INFO" for r in records
    )
