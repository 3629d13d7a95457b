"""Email jobs delivered over SMTP to a real SMTP server process (aiosmtpd, maildir)."""

import mailbox
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from app.models import EmailOutbox
from app.worker_app import create_worker_app
from tests.support.moto_server import MotoServer
from tests.support.redis_server import free_port
from tests.support.sqs_fixtures import sqs_settings
from tests.support.sqs_server import ManagedProcess, QueuePair, service_env
from tests.support.wait import wait_until_sync
from tests.worker.helpers import post_job


@pytest.fixture
def smtp_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """An SMTP server process writing what it receives to a maildir."""
    port, maildir = free_port(), tmp_path / "maildir"
    args = [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}"]
    args += ["-c", "aiosmtpd.handlers.Mailbox", str(maildir)]
    server = ManagedProcess(args, service_env({}), tmp_path / "smtpd.log")

    def listening() -> bool:
        assert server.process.poll() is None, server.log()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return False
        return True

    wait_until_sync(listening, within=10, what="the SMTP server to listen")
    yield port, maildir
    server.stop()


async def test_email_jobs_are_sent_by_smtp_once(
    tmp_path: Path,
    database_url: str,
    moto: MotoServer,
    queues: QueuePair,
    smtp_server: tuple[int, Path],
) -> None:
    port, maildir = smtp_server
    settings = sqs_settings(
        tmp_path,
        database_url,
        moto,
        queues,
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_starttls=False,
    )
    app = create_worker_app(settings)
    email = {"to": "casey@example.com", "subject": "Your interview", "body": "See you at 10."}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 9))
        async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
            for expected in ("done", "duplicate"):
                response = await post_job(client, "email", email, job_id="interview-1")
                assert response.json()["status"] == expected
        async with app.state.resources.database.sessionmaker() as session:
            outbox = (await session.scalars(select(EmailOutbox))).one()
    assert (outbox.status, outbox.body, outbox.recipient) == ("sent", None, "casey@example.com")
    messages = list(mailbox.Maildir(maildir, create=False))
    assert len(messages) == 1
    assert messages[0]["To"] == "casey@example.com"
    assert messages[0]["Subject"] == "Your interview"
    assert "See you at 10." in str(messages[0].get_payload())
