"""Candidate profiles: the candidate's own view and edits, and the admins' candidate lists."""

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, String, case, cast, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.database import contains_pattern
from app.domain.caching import CANDIDATES_TAG
from app.errors import InvalidInput, NotFound
from app.models import CandidateProfile, User
from app.models.base import utcnow
from app.services.cache import invalidate_on_commit

# The columns admins see of a candidate.
CANDIDATE_COLUMNS = (
    User.id,
    User.email,
    User.full_name,
    CandidateProfile.location,
    CandidateProfile.summary,
    CandidateProfile.skills,
    CandidateProfile.experience_years,
    CandidateProfile.resume_status,
    User.created_at,
)


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


async def create_profile(session: AsyncSession, user_id: int) -> None:
    """The empty profile of a new candidate (no cached search can match it yet)."""
    session.add(CandidateProfile(user_id=user_id, skills=[]))
    await session.flush()


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


async def profile_exists(session: AsyncSession, user_id: int) -> bool:
    """Whether the candidate still has a profile."""
    found = await session.scalar(
        select(CandidateProfile.user_id).where(CandidateProfile.user_id == user_id)
    )
    return found is not None


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


def _candidates() -> Select[Any]:
    return (
        select(*CANDIDATE_COLUMNS)
        .join(CandidateProfile, CandidateProfile.user_id == User.id)
        .where(User.role == "candidate")
    )


async def list_candidates(
    connection: AsyncConnection, *, page: int, page_size: int
) -> dict[str, Any]:
    """One page of candidates, newest first."""
    rows = (
        (
            await connection.execute(
                _candidates()
                .order_by(User.created_at.desc(), User.id.desc())
                .limit(page_size + 1)
                .offset((page - 1) * page_size)
            )
        )
        .mappings()
        .all()
    )
    return {
        "items": [dict(row) for row in rows[:page_size]],
        "page": page,
        "page_size": page_size,
        "has_more": len(rows) > page_size,
    }


async def candidates_mentioning(
    connection: AsyncConnection, terms: list[str], limit: int
) -> list[dict[str, Any]]:
    """Up to `limit` candidates, newest first, whose summary or skills contain any term."""
    conditions = []
    for term in terms:
        pattern = contains_pattern(term)
        conditions.append(CandidateProfile.summary.ilike(pattern, escape="\\"))
        conditions.append(cast(CandidateProfile.skills, String).ilike(pattern, escape="\\"))
    rows = await connection.execute(
        _candidates().where(or_(*conditions)).order_by(User.id.desc()).limit(limit)
    )
    return [dict(row) for row in rows.mappings()]


async def candidate_counts(connection: AsyncConnection) -> tuple[int, int]:
    """How many candidates there are, and how many of their resumes are parsed."""
    candidates, parsed = (
        await connection.execute(
            select(
                func.count(),
                func.coalesce(
                    func.sum(case((CandidateProfile.resume_status == "parsed", 1), else_=0)), 0
                ),
            ).select_from(CandidateProfile)
        )
    ).one()
    return int(candidates), int(parsed)
