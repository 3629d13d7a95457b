"""Admin views: dashboard counts, candidate lists and test results."""

from typing import Any

from sqlalchemy import Select, case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from app.models import Assessment, Attempt, CandidateProfile, Job, User

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


def candidates_query() -> Select[Any]:
    """Candidates joined with their profiles (the columns admins see)."""
    return (
        select(*CANDIDATE_COLUMNS)
        .join(CandidateProfile, CandidateProfile.user_id == User.id)
        .where(User.role == "candidate")
    )


async def dashboard(connection: AsyncConnection) -> dict[str, Any]:
    """Headline counts, one query per table."""
    candidates, resumes_parsed = (
        await connection.execute(
            select(
                func.count(),
                func.coalesce(
                    func.sum(case((CandidateProfile.resume_status == "parsed", 1), else_=0)), 0
                ),
            ).select_from(CandidateProfile)
        )
    ).one()
    active_jobs = await connection.scalar(
        select(func.count()).select_from(Job).where(Job.active.is_(True))
    )
    active_tests = await connection.scalar(
        select(func.count()).select_from(Assessment).where(Assessment.active.is_(True))
    )
    in_progress, completed, average = (
        await connection.execute(
            select(
                func.coalesce(func.sum(case((Attempt.status == "in_progress", 1), else_=0)), 0),
                func.coalesce(func.sum(case((Attempt.status == "completed", 1), else_=0)), 0),
                func.avg(
                    case(
                        (
                            (Attempt.status == "completed") & (Attempt.max_score > 0),
                            100.0 * Attempt.score / Attempt.max_score,
                        ),
                    )
                ),
            )
        )
    ).one()
    return {
        "candidates": candidates,
        "active_jobs": active_jobs or 0,
        "active_tests": active_tests or 0,
        "attempts_in_progress": int(in_progress),
        "attempts_completed": int(completed),
        "average_score_percent": round(float(average), 2) if average is not None else None,
        "resumes_parsed": int(resumes_parsed),
    }


async def list_candidates(
    connection: AsyncConnection, *, page: int, page_size: int
) -> dict[str, Any]:
    rows = (
        (
            await connection.execute(
                candidates_query()
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


async def list_results(
    connection: AsyncConnection, *, test_id: int | None, page: int, page_size: int
) -> dict[str, Any]:
    """Completed attempts with candidate and test, newest first."""
    statement = (
        select(
            Attempt.id.label("attempt_id"),
            User.id.label("candidate_id"),
            User.full_name.label("candidate_name"),
            User.email.label("candidate_email"),
            Assessment.id.label("test_id"),
            Assessment.title.label("test_title"),
            Attempt.score,
            Attempt.max_score,
            Attempt.completed_at,
        )
        .join(User, User.id == Attempt.user_id)
        .join(Assessment, Assessment.id == Attempt.test_id)
        .where(Attempt.status == "completed")
    )
    if test_id is not None:
        statement = statement.where(Attempt.test_id == test_id)
    rows = (
        (
            await connection.execute(
                statement.order_by(Attempt.completed_at.desc(), Attempt.id.desc())
                .limit(page_size + 1)
                .offset((page - 1) * page_size)
            )
        )
        .mappings()
        .all()
    )
    items = []
    for row in rows[:page_size]:
        item = dict(row)
        item["score_percent"] = (
            round(100.0 * item["score"] / item["max_score"], 2) if item["max_score"] else 0.0
        )
        items.append(item)
    return {"items": items, "page": page, "page_size": page_size, "has_more": len(rows) > page_size}
