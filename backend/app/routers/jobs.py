"""Public job listings (the hottest read path)."""

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from app.database import ReadConnDep
from app.routers.pagination import Page, PageSize
from app.schemas.job import JobListOut, JobOut
from app.services import jobs

router = APIRouter(prefix="/api/jobs", tags=["jobs"])

SearchTerm = Annotated[str | None, Query(min_length=1, max_length=100)]


@router.get("", response_model=JobListOut)
async def list_jobs(
    connection: ReadConnDep,
    search: SearchTerm = None,
    job_type: Annotated[str | None, Query(max_length=40)] = None,
    location: SearchTerm = None,
    page: Page = 1,
    page_size: PageSize = 20,
) -> Response:
    """Active jobs, newest first; `search` matches title, company and description."""
    body = await jobs.list_jobs_json(
        connection, search=search, job_type=job_type, location=location, page=page, page_size=page_size
    )
    return Response(body, media_type="application/json")


@router.get("/{job_id}", response_model=JobOut)
async def get_job(job_id: int, connection: ReadConnDep) -> Response:
    """One active job."""
    return Response(await jobs.get_job_json(connection, job_id), media_type="application/json")
