"""Public job listings (the hottest read path)."""

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from app.deps import resources_of
from app.domain import jobs
from app.domain.caching import JOB_DETAIL, JOB_LISTINGS
from app.http_cache import cached_response
from app.schemas.common import ResourceId, SafeText
from app.schemas.job import JobListOut, JobOut
from app.schemas.pagination import Page, PageSize
from app.services.cache import make_key

router = APIRouter(prefix="/api/jobs", tags=["jobs"])

SearchTerm = Annotated[SafeText | None, Query(min_length=1, max_length=100)]


@router.get("", response_model=JobListOut)
async def list_jobs(
    request: Request,
    search: SearchTerm = None,
    job_type: Annotated[SafeText | None, Query(max_length=40)] = None,
    location: SearchTerm = None,
    page: Page = 1,
    page_size: PageSize = 20,
) -> Response:
    """Active jobs, newest first; `search` matches title, company and description."""
    # Resources straight from the app: on the hottest route a dependency costs a resolution.
    resources = resources_of(request.app)

    # The database is touched only on a miss: a hit costs one Redis call and no pool checkout.
    async def compute() -> bytes:
        return await jobs.list_jobs_json(
            resources.database,
            search=search,
            job_type=job_type,
            location=location,
            page=page,
            page_size=page_size,
        )

    key = make_key(search, job_type, location, page, page_size)
    return await cached_response(request, resources.cache, JOB_LISTINGS, key, compute)


@router.get("/{job_id}", response_model=JobOut)
async def get_job(job_id: ResourceId, request: Request) -> Response:
    """One active job."""
    resources = resources_of(request.app)

    async def compute() -> bytes:
        return await jobs.get_job_json(resources.database, job_id)

    return await cached_response(request, resources.cache, JOB_DETAIL, make_key(job_id), compute)
