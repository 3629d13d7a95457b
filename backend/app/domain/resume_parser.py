"""Resume text extraction (PDF, DOCX, TXT) and skills / experience extraction from the text.

CPU-bound and fed hostile files: callers run :func:`parse_resume` through
:mod:`app.domain.resume_sandbox` (a child process with CPU, memory and time limits), never on an
event loop.
"""

import io
import re
import zipfile
from dataclasses import dataclass
from datetime import date

import docx
from pypdf import PdfReader
from pypdf.errors import PyPdfError

MAX_TEXT_CHARS = 200_000
MAX_PDF_PAGES = 50
MAX_EXPERIENCE_YEARS = 60

# Canonical skill name -> the spellings that count for it (matched as whole words, any case).
SKILLS: dict[str, tuple[str, ...]] = {
    "Python": ("python",),
    "Java": ("java",),
    "JavaScript": ("javascript", "js"),
    "TypeScript": ("typescript",),
    "Go": ("golang",),
    "Rust": ("rust",),
    "C++": ("c++",),
    "C#": ("c#",),
    "Ruby": ("ruby",),
    "PHP": ("php",),
    "Kotlin": ("kotlin",),
    "Swift": ("swift",),
    "SQL": ("sql",),
    "PostgreSQL": ("postgresql", "postgres"),
    "MySQL": ("mysql",),
    "MongoDB": ("mongodb",),
    "Redis": ("redis",),
    "FastAPI": ("fastapi",),
    "Django": ("django",),
    "Flask": ("flask",),
    "React": ("react", "react.js", "reactjs"),
    "Angular": ("angular",),
    "Vue": ("vue", "vue.js"),
    "Node.js": ("node.js", "nodejs"),
    "Spring": ("spring boot", "spring"),
    "Docker": ("docker",),
    "Kubernetes": ("kubernetes", "k8s"),
    "Terraform": ("terraform",),
    "AWS": ("aws", "amazon web services"),
    "Azure": ("azure",),
    "GCP": ("gcp", "google cloud"),
    "Linux": ("linux",),
    "Git": ("git",),
    "CI/CD": ("ci/cd",),
    "GraphQL": ("graphql",),
    "REST": ("rest api", "rest apis", "restful"),
    "Machine Learning": ("machine learning",),
    "Data Analysis": ("data analysis",),
    "Pandas": ("pandas",),
    "NumPy": ("numpy",),
    "TensorFlow": ("tensorflow",),
    "PyTorch": ("pytorch",),
    "Kafka": ("kafka",),
    "Spark": ("spark",),
    "Excel": ("excel",),
    "Agile": ("agile", "scrum"),
}
# Word boundaries that also work around "+", "#", "." and "/" inside names.
_SKILL_PATTERNS = {
    name: re.compile(
        "|".join(rf"(?<![\w+#]){re.escape(spelling)}(?![\w+#])" for spelling in spellings),
        re.IGNORECASE,
    )
    for name, spellings in SKILLS.items()
}
_YEARS_RE = re.compile(
    r"(\d{1,2})\s*\+?\s*(?:years?|yrs?)\b(?:\s+of)?(?:\s+\w+){0,3}?\s+experience"
    r"|experience\s*(?:of|:)?\s*(\d{1,2})\s*\+?\s*(?:years?|yrs?)\b",
    re.IGNORECASE,
)
_RANGE_RE = re.compile(
    r"\b((?:19|20)\d{2})\s*(?:-|\u2013|\u2014|to)\s*((?:19|20)\d{2}|present|current|now)\b",
    re.IGNORECASE,
)


class ResumeParseError(Exception):
    """The file cannot be read as a resume of its type (a permanent failure); its text is a
    sentence for the candidate."""


@dataclass(frozen=True, slots=True)
class ParsedResume:
    text: str
    skills: list[str]
    experience_years: int | None


def extract_text(data: bytes, extension: str) -> str:
    """The file's plain text; ResumeParseError when it is unreadable or has no text."""
    try:
        if extension == "pdf":
            text = _pdf_text(data)
        elif extension == "docx":
            text = _docx_text(data)
        elif extension == "txt":
            text = data.decode("utf-8")
        else:
            raise ResumeParseError("The resume could not be read: unsupported file type.")
    # The parsers raise many types for corrupt input (pypdf's own limits included); all mean
    # "cannot read this file".
    except (PyPdfError, zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise ResumeParseError(
            f"The resume could not be read: unreadable {extension.upper()} file."
        ) from exc
    text = text.replace("\x00", "").strip()
    if not text:
        raise ResumeParseError("The resume could not be read: the file contains no text.")
    return text[:MAX_TEXT_CHARS]


def _pdf_text(data: bytes) -> str:
    reader = PdfReader(io.BytesIO(data))
    if reader.is_encrypted:
        raise ResumeParseError(
            "The PDF is password-protected; upload a copy that opens without a password."
        )
    pages = reader.pages[:MAX_PDF_PAGES]
    return "\n".join(page.extract_text() or "" for page in pages)


def _docx_text(data: bytes) -> str:
    document = docx.Document(io.BytesIO(data))
    lines = [paragraph.text for paragraph in document.paragraphs]
    for table in document.tables:
        for row in table.rows:
            lines.append(" ".join(cell.text for cell in row.cells))
    return "\n".join(lines)


def extract_skills(text: str) -> list[str]:
    """Known skills mentioned in the text, in the catalogue's order."""
    return [name for name, pattern in _SKILL_PATTERNS.items() if pattern.search(text)]


def extract_experience_years(text: str, today: date | None = None) -> int | None:
    """Years of experience: a stated figure ("5+ years of experience") or else the span of the
    year ranges listed ("2018 - present"); None when the text gives neither."""
    stated = [int(a or b) for a, b in _YEARS_RE.findall(text)]
    stated = [years for years in stated if 0 < years <= MAX_EXPERIENCE_YEARS]
    if stated:
        return max(stated)
    current_year = (today or date.today()).year
    starts, ends = [], []
    for start, end in _RANGE_RE.findall(text):
        first = int(start)
        last = current_year if not end[:1].isdigit() else int(end)
        if first <= last <= current_year:
            starts.append(first)
            ends.append(last)
    if not starts:
        return None
    span = max(ends) - min(starts)
    return min(span, MAX_EXPERIENCE_YEARS) if span > 0 else None


def parse_resume(data: bytes, extension: str, today: date | None = None) -> ParsedResume:
    """Text, skills and years of experience of a resume file."""
    text = extract_text(data, extension)
    return ParsedResume(
        text=text,
        skills=extract_skills(text),
        experience_years=extract_experience_years(text, today),
    )
