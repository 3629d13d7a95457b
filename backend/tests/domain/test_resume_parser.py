"""Text, skills and experience extraction from real PDF, DOCX and TXT files."""

from datetime import date

import pytest

from app.domain.resume_parser import (
    ResumeParseError,
    extract_experience_years,
    extract_skills,
    parse_resume,
)
from tests.support.resume_files import RESUME_TEXT, docx_bytes, pdf_bytes

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
