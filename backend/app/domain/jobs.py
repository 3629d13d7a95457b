"""Job postings: the public listing (hot read path) and admin management."""

from datetime import datetime
from functools import cache
from typing import Any

import orjson
from sqlalchemy import ColumnElement, Integer, bindparam, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.database import CompiledRead, Database, contains_pattern
from app.domain.caching import JOBS_TAG
from app.errors import NotFound
from app.models import Job
from app.services.cache import invalidate_on_commit

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


def _contains(column: Any, parameter: str) -> ColumnElement[bool]:
    return column.ilike(bindparam(parameter), escape="\\")  # type: ignore[no-any-return]


@cache
def _listing_reader(
    has_search: bool, has_job_type: bool, has_location: bool, include_inactive: bool
) -> CompiledRead:
    """One compiled statement per combination of filters (16 at most)."""
    statement = select(*_PUBLIC_COLUMNS)
    if not include_inactive:
        statement = statement.where(Job.active.is_(True))
    if has_search:
        statement = statement.where(
            or_(
                _contains(Job.title, "search"),
                _contains(Job.company, "search"),
                _contains(Job.description, "search"),
            )
        )
    if has_job_type:
        statement = statement.where(Job.job_type == bindparam("job_type"))
    if has_location:
        statement = statement.where(_contains(Job.location, "location"))
    statement = (
        statement.order_by(Job.created_at.desc(), Job.id.desc())
        .limit(bindparam("limit", type_=Integer))
        .offset(bindparam("offset", type_=Integer))
    )
    return CompiledRead(statement)


_DETAIL_READER = CompiledRead(
    select(*_PUBLIC_COLUMNS).where(Job.id == bindparam("job_id"), Job.active.is_(True))
)


async def list_jobs_json(
    database: Database,
    *,
    search: str | None,
    job_type: str | None,
    location: str | None,
    page: int,
    page_size: int,
    include_inactive: bool = False,
) -> bytes:
    """One page of jobs, newest first, serialised once as the response body."""
    reader = _listing_reader(bool(search), bool(job_type), bool(location), include_inactive)
    rows = await reader.fetch(
        database,
        search=contains_pattern(search) if search else None,
        job_type=job_type,
        location=contains_pattern(location) if location else None,
        limit=page_size + 1,  # one extra row tells whether another page exists
        offset=(page - 1) * page_size,
    )
    return orjson.dumps(
        {
            "items": rows[:page_size],
            "page": page,
            "page_size": page_size,
            "has_more": len(rows) > page_size,
        },
        option=orjson.OPT_UTC_Z,  # "...Z", as the pydantic-serialised routes write it
    )


async def get_job_json(database: Database, job_id: int) -> bytes:
    """One active job, serialised; NotFound for unknown or inactive jobs."""
    rows = await _DETAIL_READER.fetch(database, job_id=job_id)
    if not rows:
        raise NotFound("Job not found.")
    return orjson.dumps(rows[0], option=orjson.OPT_UTC_Z)


async def create_job(session: AsyncSession, admin_id: int, fields: dict[str, Any]) -> Job:
    """Publish a job."""
    job = Job(**fields, created_by=admin_id)
    session.add(job)
    await session.flush()
    invalidate_on_commit(session, JOBS_TAG)
    return job


async def update_job(session: AsyncSession, job_id: int, changes: dict[str, Any]) -> Job:
    """Change the given fields; NotFound for an unknown job."""
    job = await session.get(Job, job_id, with_for_update=True)
    if job is None:
        raise NotFound("Job not found.")
    for field, value in changes.items():
        setattr(job, field, value)
    await session.flush()
    invalidate_on_commit(session, JOBS_TAG)
    return job


async def delete_job(session: AsyncSession, job_id: int) -> None:
    """Remove a job; NotFound for an unknown job."""
    job = await session.get(Job, job_id)
    if job is None:
        raise NotFound("Job not found.")
    await session.delete(job)
    await session.flush()
    invalidate_on_commit(session, JOBS_TAG)


def job_dict(job: Job) -> dict[str, Any]:
    """The public fields of a job, plus `active` for admins."""
    fields = {column.key: getattr(job, column.key) for column in _PUBLIC_COLUMNS}
    return fields | {"active": job.active}


async def count_active(connection: AsyncConnection) -> int:
    """Jobs currently open to candidates."""
    return int(
        await connection.scalar(select(func.count()).select_from(Job).where(Job.active.is_(True)))
        or 0
    )


async def posted_between(session: AsyncSession, start: datetime, end: datetime) -> int:
    """Jobs created in [start, end)."""
    count = await session.scalar(
        select(func.count()).where(Job.created_at >= start, Job.created_at < end)
    )
    return int(count or 0)
