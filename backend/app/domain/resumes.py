"""Resumes: the upload (stored, then queued for parsing) and the parsing's lifecycle.

A profile's `resume_status` moves uploaded -> queued -> processing -> parsed | failed. The worker's
resume-parse task reports each step here; a newer upload supersedes the job for an older file.
"""

import io
import uuid
import zipfile
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain import notifications
from app.domain.caching import CANDIDATES_TAG
from app.domain.profiles import get_profile
from app.errors import InvalidInput, UnsupportedMediaType
from app.models import CandidateProfile
from app.models.base import utcnow
from app.services.cache import invalidate_on_commit
from app.services.job_queue import JobQueue, QueueUnavailable
from app.services.storage import Storage

# What an upload may claim to be, and the file extension each is stored under.
RESUME_TYPES: dict[str, str] = {
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "text/plain": "txt",
}
MAX_ERROR_CHARS = 500


def detect_resume_type(data: bytes, declared_content_type: str | None) -> str:
    """The stored extension for an upload whose declared type and content agree."""
    declared = (declared_content_type or "").split(";")[0].strip().lower()
    extension = RESUME_TYPES.get(declared)
    if extension is None:
        raise UnsupportedMediaType("Upload a PDF, DOCX or plain-text resume.")
    if not data:
        raise InvalidInput("The file is empty.", code="empty_file")
    matches = {
        "pdf": data.startswith(b"%PDF-"),
        "docx": _is_docx(data),
        "txt": _is_text(data),
    }[extension]
    if not matches:
        raise UnsupportedMediaType(
            "The file content does not match its declared type.", code="content_mismatch"
        )
    return extension


def _is_docx(data: bytes) -> bool:
    if not data.startswith(b"PK\x03\x04"):
        return False
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return "word/document.xml" in archive.namelist()
    except zipfile.BadZipFile:
        return False


def _is_text(data: bytes) -> bool:
    if b"\x00" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _safe_filename(filename: str, extension: str) -> str:
    base = filename.replace("\\", "/").rsplit("/", 1)[-1].strip() or f"resume.{extension}"
    return base[:255]


async def upload_resume(
    session: AsyncSession,
    storage: Storage,
    jobs: JobQueue,
    user_id: int,
    filename: str,
    data: bytes,
    content_type: str | None,
) -> dict[str, Any]:
    """Validate and store a resume, point the profile at it and queue its parsing.

    The profile is committed as "queued" before the job is sent, because a worker may pick the job
    up at once and must find the profile pointing at the new file. If the queue refuses the job,
    the resume is marked failed (committed too) and QueueUnavailable propagates (503). The
    previous file is kept: deleting it before the commit could orphan the profile's pointer.
    """
    extension = detect_resume_type(data, content_type)
    profile = (await get_profile(session, user_id, for_update=True)).profile
    key = f"resumes/{user_id}/{uuid.uuid4().hex}.{extension}"
    await storage.put(key, data, content_type or "application/octet-stream")
    now = utcnow()
    profile.resume_key = key
    profile.resume_filename = _safe_filename(filename, extension)
    profile.resume_status = "queued"
    profile.resume_error = None
    profile.resume_uploaded_at = now
    profile.resume_parsed_at = None
    profile.updated_at = now
    invalidate_on_commit(session, CANDIDATES_TAG)
    await session.commit()
    try:
        await jobs.enqueue("resume-parse", {"user_id": user_id, "storage_key": key})
    except QueueUnavailable:
        profile.resume_status = "failed"
        profile.resume_error = "The resume could not be queued for processing; upload it again."
        invalidate_on_commit(session, CANDIDATES_TAG)
        await session.commit()
        raise
    return resume_status(profile)


def resume_status(profile: CandidateProfile) -> dict[str, Any]:
    """Where the profile's latest resume is in its processing."""
    return {
        "status": profile.resume_status,
        "filename": profile.resume_filename,
        "uploaded_at": profile.resume_uploaded_at,
        "parsed_at": profile.resume_parsed_at,
        "error": profile.resume_error,
    }


async def get_resume_status(session: AsyncSession, user_id: int) -> dict[str, Any]:
    """The candidate's resume status (NotFound if the account is gone)."""
    return resume_status((await get_profile(session, user_id)).profile)


async def mark_processing(session: AsyncSession, user_id: int, storage_key: str) -> bool:
    """Mark the resume as being parsed; False when the profile points at another file now."""
    marked = await session.execute(
        update(CandidateProfile)
        .where(CandidateProfile.user_id == user_id, CandidateProfile.resume_key == storage_key)
        .values(resume_status="processing", updated_at=utcnow())
    )
    if marked.rowcount == 0:  # type: ignore[attr-defined]
        return False
    invalidate_on_commit(session, CANDIDATES_TAG)
    return True


async def _current_profile(
    session: AsyncSession, user_id: int, storage_key: str
) -> CandidateProfile | None:
    """The profile, locked, if it still points at this file."""
    profile = await session.get(
        CandidateProfile, user_id, with_for_update=True, populate_existing=True
    )
    if profile is None or profile.resume_key != storage_key:
        return None
    return profile


async def record_parsed(
    session: AsyncSession,
    user_id: int,
    storage_key: str,
    *,
    summary: str,
    skills: list[str],
    experience_years: int | None,
) -> bool:
    """Store what parsing found and notify the candidate; False if a newer upload superseded it."""
    profile = await _current_profile(session, user_id, storage_key)
    if profile is None:
        return False
    now = utcnow()
    profile.summary = summary or profile.summary
    profile.skills = skills
    profile.experience_years = experience_years
    profile.resume_status = "parsed"
    profile.resume_error = None
    profile.resume_parsed_at = now
    profile.updated_at = now
    found = f"{len(skills)} skill{'s' if len(skills) != 1 else ''}"
    notifications.notify(
        session,
        user_id,
        "resume_parsed",
        "Your resume has been processed",
        f"We read your resume and found {found}. Check your profile.",
    )
    await session.flush()
    invalidate_on_commit(session, CANDIDATES_TAG)
    return True


async def record_failure(
    session: AsyncSession, user_id: int, storage_key: str, reason: str
) -> None:
    """The file can never be parsed: say so on the profile and to the candidate."""
    profile = await _current_profile(session, user_id, storage_key)
    if profile is None:
        return
    profile.resume_status = "failed"
    profile.resume_error = reason[:MAX_ERROR_CHARS]
    profile.updated_at = utcnow()
    notifications.notify(
        session,
        user_id,
        "resume_failed",
        "We could not process your resume",
        f"{reason} Please upload a PDF, DOCX or plain-text file with selectable text.",
    )
    await session.flush()
    invalidate_on_commit(session, CANDIDATES_TAG)


async def give_up(session: AsyncSession, user_id: int, storage_key: str) -> None:
    """Parsing failed on every attempt: the profile says so (the job goes to the DLQ)."""
    await session.execute(
        update(CandidateProfile)
        .where(
            CandidateProfile.user_id == user_id,
            CandidateProfile.resume_key == storage_key,
            CandidateProfile.resume_status.in_(("queued", "processing")),
        )
        .values(
            resume_status="failed",
            resume_error="Processing failed repeatedly; it will be retried later.",
            updated_at=utcnow(),
        )
    )
    invalidate_on_commit(session, CANDIDATES_TAG)


async def activity_between(
    session: AsyncSession, start: datetime, end: datetime
) -> tuple[int, int]:
    """Resumes uploaded, and resumes parsed, in [start, end)."""

    def within(column: Any) -> Any:
        return func.count().filter(column >= start, column < end)

    uploaded, parsed = (
        await session.execute(
            select(
                within(CandidateProfile.resume_uploaded_at),
                within(CandidateProfile.resume_parsed_at),
            ).select_from(CandidateProfile)
        )
    ).one()
    return int(uploaded), int(parsed)
