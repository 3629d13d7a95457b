"""Resume parsing throughput on one core: the CPU part of /worker/resume-parse.

Usage (from backend/): ../.venv/bin/python ../bench/worker/parse_throughput.py
Builds a one-page PDF, a DOCX and a plain-text resume of about 3.5 KB of text each, then times
parse_resume (text extraction, skills, experience) over many runs.
"""

import io
import time

import docx

from app.domain.resume_parser import parse_resume
from tests.worker.helpers import pdf_bytes

RESUME = (
    "Jane Doe - Senior Backend Engineer. 2015 - 2024 at Acme building Python, FastAPI, "
    "PostgreSQL, Redis and AWS services; Docker and Kubernetes in production; React on the side. "
) * 20


def docx_bytes(text: str) -> bytes:
    document = docx.Document()
    for paragraph in text.split(". "):
        document.add_paragraph(paragraph)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def main() -> None:
    for name, data, extension in (
        ("pdf", pdf_bytes(RESUME), "pdf"),
        ("docx", docx_bytes(RESUME), "docx"),
        ("txt", RESUME.encode(), "txt"),
    ):
        parsed = parse_resume(data, extension)
        runs = 200
        started = time.perf_counter()
        for _ in range(runs):
            parse_resume(data, extension)
        per_parse = (time.perf_counter() - started) / runs
        print(
            f"{name}: {len(data)} bytes, skills={len(parsed.skills)}, "
            f"{per_parse * 1000:.2f} ms per parse, {3600 / per_parse:,.0f} parses/hour per core"
        )


if __name__ == "__main__":
    main()
