"""Text, skills and experience extraction from real PDF, DOCX and TXT files, in this process and
in the limited parser process (real child processes: CPU, memory and wall-clock limits)."""

import asyncio
import io
import os
import resource
from datetime import date
from pathlib import Path

import pytest
from pypdf import PdfReader, PdfWriter

from app.domain.resume_parser import (
    ResumeParseError,
    extract_experience_years,
    extract_skills,
    parse_resume,
)
from app.domain.resume_sandbox import TOO_COMPLEX, SandboxLimits, parse_in_sandbox
from tests.support.resume_files import RESUME_TEXT, costly_pdf_bytes, docx_bytes, pdf_bytes
from tests.support.wait import wait_until

LIMITS = SandboxLimits(cpu_seconds=2, memory_mb=512, timeout_seconds=120, concurrency=2)
# What a parser child may spend beyond its CPU budget: interpreter start-up and imports (~0.3 s),
# and the second between the soft limit's SIGXCPU and the hard one's SIGKILL.
CPU_MARGIN = 3.0

EXPECTED_SKILLS = ["Python", "PostgreSQL", "FastAPI", "Docker", "Kubernetes", "AWS", "REST"]


@pytest.mark.parametrize(
    ("extension", "data"),
    [
        ("pdf", pdf_bytes(RESUME_TEXT)),
        ("docx", docx_bytes(RESUME_TEXT)),
        ("txt", RESUME_TEXT.encode()),
    ],
)
def test_each_format_yields_text_skills_and_experience(extension: str, data: bytes) -> None:
    parsed = parse_resume(data, extension)
    assert "Jordan Rivers" in parsed.text
    assert parsed.skills == EXPECTED_SKILLS
    assert parsed.experience_years == 6


def test_skills_match_whole_words_and_symbols() -> None:
    text = "C++ and C# developer; JavaScript everywhere; we went to the gym; golang; ci/cd"
    assert extract_skills(text) == ["JavaScript", "Go", "C++", "C#", "CI/CD"]


def test_experience_from_year_ranges_when_not_stated() -> None:
    text = "Globex 2012 - 2015\nInitech 2016 \u2013 present"
    assert extract_experience_years(text, today=date(2026, 6, 1)) == 14
    assert extract_experience_years("No dates at all.") is None


@pytest.mark.parametrize(
    ("extension", "data"),
    [
        ("pdf", b"%PDF-1.4 this is not really a pdf"),
        ("docx", b"PK\x03\x04 broken zip"),
        ("txt", b"\xff\xfe\xfa invalid utf-8"),
        ("txt", b"   \n  "),
        ("rtf", b"{\\rtf1 hello}"),
    ],
)
def test_unreadable_files_are_permanent_errors(extension: str, data: bytes) -> None:
    with pytest.raises(ResumeParseError):
        parse_resume(data, extension)


def encrypted_pdf_bytes() -> bytes:
    writer = PdfWriter(clone_from=io.BytesIO(pdf_bytes(RESUME_TEXT)))
    writer.encrypt(user_password="secret", algorithm="AES-128")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def test_the_costly_pdf_is_small_and_valid() -> None:
    """The crafted file is ~10 KB and a valid 30-page PDF."""
    data = costly_pdf_bytes()
    assert len(data) < 12 * 1024
    assert len(PdfReader(io.BytesIO(data)).pages) == 30


@pytest.mark.parametrize(
    ("extension", "data"),
    [
        ("pdf", pdf_bytes(RESUME_TEXT)),
        ("docx", docx_bytes(RESUME_TEXT)),
        ("txt", RESUME_TEXT.encode()),
    ],
)
async def test_the_sandbox_parses_like_the_parser(extension: str, data: bytes) -> None:
    assert await parse_in_sandbox(data, extension, LIMITS) == parse_resume(data, extension)


async def test_the_costly_pdf_stops_at_the_cpu_budget() -> None:
    before = children_cpu_seconds()
    with pytest.raises(ResumeParseError) as failure:
        await parse_in_sandbox(costly_pdf_bytes(), "pdf", LIMITS)
    spent = children_cpu_seconds() - before
    assert str(failure.value) == TOO_COMPLEX
    # Unbounded, this file costs minutes of CPU (30 pages at 10-20 s each).
    assert spent <= LIMITS.cpu_seconds + CPU_MARGIN


async def test_the_memory_budget_stops_a_parse() -> None:
    # Parsing one page of the costly PDF takes ~300 MB; the CPU budget is not what stops it.
    limits = SandboxLimits(cpu_seconds=60, memory_mb=160, timeout_seconds=120, concurrency=1)
    with pytest.raises(ResumeParseError) as failure:
        await parse_in_sandbox(costly_pdf_bytes(), "pdf", limits)
    assert str(failure.value) == TOO_COMPLEX


async def test_the_wall_clock_deadline_kills_a_parse() -> None:
    limits = SandboxLimits(cpu_seconds=300, memory_mb=1024, timeout_seconds=1.5, concurrency=1)
    with pytest.raises(ResumeParseError) as failure:
        await parse_in_sandbox(costly_pdf_bytes(), "pdf", limits)
    assert str(failure.value) == TOO_COMPLEX
    assert parser_children() == []


@pytest.mark.parametrize(
    ("extension", "data", "reason"),
    [
        ("pdf", encrypted_pdf_bytes(), "The PDF is password-protected"),
        ("pdf", b"%PDF-1.4 this is not really a pdf", "The resume could not be read"),
        ("docx", b"PK\x03\x04 broken zip", "The resume could not be read"),
        ("txt", b"   ", "The resume could not be read: the file contains no text."),
    ],
)
async def test_unreadable_files_fail_in_the_sandbox_with_a_reason(
    extension: str, data: bytes, reason: str
) -> None:
    with pytest.raises(ResumeParseError) as failure:
        await parse_in_sandbox(data, extension, LIMITS)
    assert str(failure.value).startswith(reason)


def parser_children() -> list[int]:
    """Pids of this process's resume parser children that are still running."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        # Fields after the command name (which may hold spaces): state, then the parent's pid.
        state, parent = stat.rsplit(")", 1)[1].split()[:2]
        if int(parent) == os.getpid() and state != "Z" and b"app.domain.resume_sandbox" in command:
            found.append(int(entry.name))
    return found


@pytest.mark.parametrize("concurrency", [1, 2])
async def test_parser_processes_are_bounded_per_process(concurrency: int) -> None:
    limits = SandboxLimits(
        cpu_seconds=2, memory_mb=512, timeout_seconds=120, concurrency=concurrency
    )
    parses = [
        asyncio.ensure_future(parse_in_sandbox(costly_pdf_bytes(), "pdf", limits)) for _ in range(3)
    ]
    most = 0

    async def all_done() -> bool:
        nonlocal most
        most = max(most, len(parser_children()))
        return all(parse.done() for parse in parses)

    # Three parses of at most 2 CPU seconds each, one after another at worst.
    await wait_until(all_done, within=3 * (limits.cpu_seconds + CPU_MARGIN), what="the parses")
    for parse in parses:
        assert isinstance(parse.exception(), ResumeParseError)
    assert most == concurrency
