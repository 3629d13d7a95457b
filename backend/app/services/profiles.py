"""Candidate profiles and resume uploads."""

import io
import uuid
import zipfile
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import InvalidInput, NotFound, UnsupportedMediaType
from app.models import CandidateProfile, User
from app.models.base import utcnow
from app.services.cache import CANDIDATES_TAG, invalidate_on_commit
from app.services.job_queue import JobQueue
from app.services.sqs_queue import QueueUnavailable
from app.services.storage import Storage

# What an upload may claim to be, and the file extension each is stored under.
RESUME_TYPES: dict[str, str] = {
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "text/plain": "txt",
}


@dataclass(frozen=True, slots=True)
class ProfileView:
    user: User
    profile: CandidateProfile

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.user.id,
            "email": self.user.email,
            "full_name": self.user.full_name,
            "phone": self.profile.phone,
            "location": self.profile.location,
            "summary": self.profile.summary,
            "skills": self.profile.skills,
            "experience_years": self.profile.experience_years,
            "resume_status": self.profile.resume_status,
            "resume_filename": self.profile.resume_filename,
            "updated_at": self.profile.updated_at,
        }


async def get_profile(
    session: AsyncSession, user_id: int, *, for_update: bool = False
) -> ProfileView:
    """The user's profile (NotFound if the account is gone)."""
    statement = (
        select(User, CandidateProfile)
        .join(CandidateProfile, CandidateProfile.user_id == User.id)
        .where(User.id == user_id)
    )
    if for_update:
        statement = statement.with_for_update(of=CandidateProfile)
    row = (await session.execute(statement)).one_or_none()
    if row is None:
        raise NotFound("Profile not found.")
    return ProfileView(user=row[0], profile=row[1])


async def update_profile(
    session: AsyncSession, user_id: int, changes: dict[str, Any]
) -> ProfileView:
    """Apply the given fields (only those present in the request)."""
    view = await get_profile(session, user_id, for_update=True)
    if "full_name" in changes:
        if changes["full_name"] is None:
            raise InvalidInput("full_name cannot be null.")
        view.user.full_name = changes.pop("full_name")
    if "skills" in changes and changes["skills"] is None:
        changes["skills"] = []
    for field, value in changes.items():
        setattr(view.profile, field, value)
    view.profile.updated_at = utcnow()
    await session.flush()
    invalidate_on_commit(session, CANDIDATES_TAG)
    return view


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


async def store_resume(
    session: AsyncSession,
    storage: Storage,
    user_id: int,
    filename: str,
    data: bytes,
    content_type: str | None,
) -> CandidateProfile:
    """Validate and store a resume; the profile points at it with status `uploaded`."""
    extension = detect_resume_type(data, content_type)
    view = await get_profile(session, user_id, for_update=True)
    key = f"resumes/{user_id}/{uuid.uuid4().hex}.{extension}"
    await storage.put(key, data, content_type or "application/octet-stream")
    # The previous file is kept: deleting it before the commit could orphan the profile's pointer.
    profile = view.profile
    profile.resume_key = key
    profile.resume_filename = _safe_filename(filename, extension)
    profile.resume_status = "uploaded"
    profile.resume_error = None
    profile.resume_uploaded_at = utcnow()
    profile.resume_parsed_at = None
    profile.updated_at = utcnow()
    await session.flush()
    invalidate_on_commit(session, CANDIDATES_TAG)
    return profile


async def queue_resume_parsing(
    session: AsyncSession, jobs: JobQueue, profile: CandidateProfile
) -> None:
    """Mark the stored resume "queued", commit, then queue its parsing.

    The commit comes first because a worker may pick the job up at once and must find the
    profile pointing at the new file. If the queue refuses the job, the resume is marked
    failed (committed too) and QueueUnavailable propagates (503).
    """
    profile.resume_status = "queued"
    await session.commit()
    try:
        await jobs.enqueue(
            "resume-parse", {"user_id": profile.user_id, "storage_key": profile.resume_key}
        )
    except QueueUnavailable:
        profile.resume_status = "failed"
        profile.resume_error = "The resume could not be queued for processing; upload it again."
        await session.commit()
        raise


def _safe_filename(filename: str, extension: str) -> str:
    base = filename.replace("\\", "/").rsplit("/", 1)[-1].strip() or f"resume.{extension}"
    return base[:255]


async def get_resume_status(session: AsyncSession, user_id: int) -> dict[str, Any]:
    view = await get_profile(session, user_id)
    profile = view.profile
    return {
        "status": profile.resume_status,
        "filename": profile.resume_filename,
        "uploaded_at": profile.resume_uploaded_at,
        "parsed_at": profile.resume_parsed_at,
        "error": profile.resume_error,
    }
