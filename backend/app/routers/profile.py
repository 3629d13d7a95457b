"""The candidate's own profile and resume."""

from typing import Any

from fastapi import APIRouter, Request, status
from starlette.datastructures import UploadFile
from starlette.types import Message

from app.deps import CandidateUser, JobQueueDep, SessionDep, SettingsDep, StorageDep
from app.domain import profiles, resumes
from app.errors import InvalidInput, PayloadTooLarge
from app.schemas.common import NUL
from app.schemas.profile import ProfileOut, ProfileUpdateIn, ResumeStatusOut

router = APIRouter(prefix="/api/profile", tags=["profile"])

# Multipart framing around the file: boundaries and part headers.
MULTIPART_OVERHEAD = 16 * 1024

_RESUME_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


@router.get("")
async def get_profile(user: CandidateUser, session: SessionDep) -> ProfileOut:
    """The caller's profile."""
    view = await profiles.get_profile(session, user.user_id)
    return ProfileOut.model_validate(view.as_dict())


@router.patch("")
async def update_profile(
    body: ProfileUpdateIn, user: CandidateUser, session: SessionDep
) -> ProfileOut:
    """Change the fields sent; others stay as they are."""
    changes = body.changes(
        nullable=frozenset({"phone", "location", "summary", "skills", "experience_years"})
    )
    view = await profiles.update_profile(session, user.user_id, changes)
    return ProfileOut.model_validate(view.as_dict())


async def _read_resume(request: Request, limit: int) -> tuple[str, bytes, str | None]:
    """Parse the multipart body, refusing bodies over the limit while they stream in."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + MULTIPART_OVERHEAD:
        raise PayloadTooLarge(f"The resume must be at most {limit // 1024} KiB.")
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await request.receive()
        received += len(message.get("body", b""))
        if received > limit + MULTIPART_OVERHEAD:
            raise PayloadTooLarge(f"The resume must be at most {limit // 1024} KiB.")
        return message

    async with Request(request.scope, receive).form(max_files=1, max_fields=4) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidInput(
                "Send the resume as the multipart field 'file'.", code="file_missing"
            )
        # The name is stored (Postgres refuses NUL in text) and the type passed to storage.
        if NUL in (upload.filename or "") or NUL in (upload.content_type or ""):
            raise InvalidInput(
                "The file name and type must not contain NUL characters.", code="nul_character"
            )
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise PayloadTooLarge(f"The resume must be at most {limit // 1024} KiB.")
        return upload.filename or "resume", data, upload.content_type


@router.post("/resume", status_code=status.HTTP_202_ACCEPTED, openapi_extra=_RESUME_BODY)
async def upload_resume(
    request: Request,
    user: CandidateUser,
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
    jobs: JobQueueDep,
) -> ResumeStatusOut:
    """Upload a PDF, DOCX or TXT resume (size-limited; type and content must agree).

    202: the file is stored and its parsing queued (status "queued"); follow resume-status.
    """
    filename, data, content_type = await _read_resume(request, settings.max_resume_bytes)
    uploaded = await resumes.upload_resume(
        session, storage, jobs, user.user_id, filename, data, content_type
    )
    return ResumeStatusOut.model_validate(uploaded)


@router.get("/resume-status")
async def resume_status(user: CandidateUser, session: SessionDep) -> ResumeStatusOut:
    """Where the latest resume is in its processing."""
    return ResumeStatusOut.model_validate(await resumes.get_resume_status(session, user.user_id))
