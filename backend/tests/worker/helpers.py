"""Helpers for worker tests: sqsd-style requests, resume files, database counts."""

import uuid
import zlib
from typing import Any

import httpx
from docx import Document
from fastapi import FastAPI
from sqlalchemy import func, select

from app.services.job_queue import JobMessage


def sqsd_headers(message_id: str | None = None, receive_count: int = 1) -> dict[str, str]:
    """The headers EB's sqsd sends with a message (plus an unknown one, to be tolerated)."""
    return {
        "User-Agent": "aws-sqsd/3.0.4",
        "Content-Type": "application/json",
        "X-Aws-Sqsd-Msgid": message_id or str(uuid.uuid4()),
        "X-Aws-Sqsd-Queue": "hiring-pro-test",
        "X-Aws-Sqsd-First-Received-At": "2026-01-01T00:00:00Z",
        "X-Aws-Sqsd-Receive-Count": str(receive_count),
        "X-Aws-Sqsd-Sent-At": "2026-01-01T00:00:00Z",
        "X-Aws-Sqsd-Some-Future-Header": "ignored",
    }


async def post_job(
    client: httpx.AsyncClient,
    task: str,
    payload: dict[str, Any],
    *,
    message_id: str | None = None,
    job_id: str | None = None,
    receive_count: int = 1,
) -> httpx.Response:
    """POST a job message to its worker route the way sqsd does."""
    message = JobMessage(task, payload) if job_id is None else JobMessage(task, payload, id=job_id)
    return await client.post(
        f"/worker/{task}",
        content=message.encode(),
        headers=sqsd_headers(message_id, receive_count),
    )


async def post_cron(
    client: httpx.AsyncClient, task: str, scheduled_at: str, message_id: str | None = None
) -> httpx.Response:
    """A cron delivery: empty body, task name and scheduled time in headers."""
    headers = {
        **sqsd_headers(message_id),
        "X-Aws-Sqsd-Taskname": task,
        "X-Aws-Sqsd-Scheduled-At": scheduled_at,
        "X-Aws-Sqsd-Sender-Id": "AIDAEXAMPLE",
    }
    return await client.post(f"/worker/{task}", content=b"", headers=headers)


async def count(app: FastAPI, model: Any, *conditions: Any) -> int:
    """Rows of ``model`` matching ``conditions``."""
    async with app.state.resources.database.sessionmaker() as session:
        total = await session.scalar(select(func.count()).select_from(model).where(*conditions))
    return int(total or 0)


RESUME_TEXT = (
    "Jordan Rivers - Backend Engineer. 6 years of experience building REST APIs with Python, "
    "FastAPI and PostgreSQL on AWS. Docker and Kubernetes in production. Acme 2019 - present."
)


def docx_bytes(text: str) -> bytes:
    """A real DOCX document with ``text`` as its paragraphs."""
    import io

    document = Document()
    for line in text.split(". "):
        document.add_paragraph(line)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def pdf_bytes(text: str) -> bytes:
    """A minimal valid one-page PDF whose content stream shows ``text`` (Helvetica)."""
    escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    stream = zlib.compress(f"BT /F1 10 Tf 40 700 Td ({escaped}) Tj ET".encode("latin-1"))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)
