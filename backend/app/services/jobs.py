"""Job postings: the public listing (hot read path) and admin management."""

from typing import Any

import orjson
from sqlalchemy import ColumnElement, Select, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.errors import NotFound
from app.models import Job
from app.services.cache import JOBS_TAG, invalidate_on_commit

# The listing selects only the columns it returns: no ORM objects, no per-row validation.
_PUBLIC_COLUMNS = (
    Job.id,
    Job.title,
    Job.company,
    Job.location,
    Job.job_type,
    Job.description,
    Job.skills,
    Job.created_at,
)


def _like_pattern(term: str) -> str:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _contains(column: Any, term: str) -> ColumnElement[bool]:
    return column.ilike(_like_pattern(term), escape="\\")  # type: ignore[no-any-return]


def _listing(
    *, search: str | None, job_type: str | None, location: str | None, include_inactive: bool
) -> Select[Any]:
    statement = select(*_PUBLIC_COLUMNS)
    if not include_inactive:
        statement = statement.where(Job.active.is_(True))
    if search:
        statement = statement.where(
            or_(
                _contains(Job.title, search),
                _contains(Job.company, search),
                _contains(Job.description, search),
            )
        )
    if job_type:
        statement = statement.where(Job.job_type == job_type)
    if location:
        statement = statement.where(_contains(Job.location, location))
    return statement


async def list_jobs_json(
    connection: AsyncConnection,
    *,
    search: str | None,
    job_type: str | None,
    location: str | None,
    page: int,
    page_size: int,
    include_inactive: bool = False,
) -> bytes:
    """One page of jobs, newest first, serialised once as the response body."""
    statement = (
        _listing(
            search=search, job_type=job_type, location=location, include_inactive=include_inactive
        )
        .order_by(Job.created_at.desc(), Job.id.desc())
        .limit(page_size + 1)  # one extra row tells whether another page exists
        .offset((page - 1) * page_size)
    )
    rows = (await connection.execute(statement)).mappings().all()
    return orjson.dumps(
        {
            "items": [dict(row) for row in rows[:page_size]],
            "page": page,
            "page_size": page_size,
            "has_more": len(rows) > page_size,
        }
    )


async def get_job_json(connection: AsyncConnection, job_id: int) -> bytes:
    """One active job, serialised; NotFound for unknown or inactive jobs."""
    row = (
        (await connection.execute(select(*_PUBLIC_COLUMNS).where(Job.id == job_id, Job.active.is_(True))))
        .mappings()
        .one_or_none()
    )
    if row is None:
        raise NotFound("Job not found.")
    return orjson.dumps(dict(row))


async def create_job(session: AsyncSession, admin_id: int, fields: dict[str, Any]) -> Job:
    job = Job(**fields, created_by=admin_id)
    session.add(job)
    await session.flush()
    invalidate_on_commit(session, JOBS_TAG)
    return job


async def update_job(session: AsyncSession, job_id: int, changes: dict[str, Any]) -> Job:
    job = await session.get(Job, job_id, with_for_update=True)
    if job is None:
        raise NotFound("Job not found.")
    for field, value in changes.items():
        setattr(job, field, value)
    await session.flush()
    invalidate_on_commit(session, JOBS_TAG)
    return job


async def delete_job(session: AsyncSession, job_id: int) -> None:
    job = await session.get(Job, job_id)
    if job is None:
        raise NotFound("Job not found.")
    await session.delete(job)
    await session.flush()
    invalidate_on_commit(session, JOBS_TAG)


def job_dict(job: Job) -> dict[str, Any]:
    """The public fields of a job, plus `active` for admins."""
    return {column.key: getattr(job, column.key) for column in _PUBLIC_COLUMNS} | {"active": job.active}
