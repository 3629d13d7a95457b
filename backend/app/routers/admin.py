"""Admin routes: dashboard, candidates, results, AI question generation and job management."""

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query, Request, status
from starlette.responses import Response

from app.database import ReadConnDep, SessionDep
from app.deps import AdminUser
from app.routers.pagination import Page, PageSize
from app.schemas.admin import (
    AIGenerateIn,
    AIGenerateOut,
    CandidateListOut,
    CandidateSearchOut,
    DashboardOut,
    ResultListOut,
)
from app.schemas.job import AdminJobOut, JobCreateIn, JobListOut, JobUpdateIn
from app.services import admin, assessments, candidate_search, jobs
from app.services.ai import AIService

router = APIRouter(prefix="/api/admin", tags=["admin"])


@router.get("/dashboard")
async def dashboard(user: AdminUser, connection: ReadConnDep) -> DashboardOut:
    """Headline counts for the admin home page."""
    return DashboardOut.model_validate(await admin.dashboard(connection))


@router.get("/candidates")
async def list_candidates(
    user: AdminUser, connection: ReadConnDep, page: Page = 1, page_size: PageSize = 20
) -> CandidateListOut:
    """Candidates, newest first."""
    return CandidateListOut.model_validate(
        await admin.list_candidates(connection, page=page, page_size=page_size)
    )


@router.get("/candidates/search")
async def search_candidates(
    user: AdminUser,
    connection: ReadConnDep,
    q: Annotated[str, Query(min_length=1, max_length=200)],
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> CandidateSearchOut:
    """Candidates ranked by how well their skills and summary match `q`."""
    items = await candidate_search.search_candidates(connection, q, limit)
    return CandidateSearchOut.model_validate({"query": q, "items": items})


@router.get("/results")
async def list_results(
    user: AdminUser,
    connection: ReadConnDep,
    test_id: Annotated[int | None, Query(ge=1)] = None,
    page: Page = 1,
    page_size: PageSize = 20,
) -> ResultListOut:
    """Completed attempts with scores, newest first."""
    return ResultListOut.model_validate(
        await admin.list_results(connection, test_id=test_id, page=page, page_size=page_size)
    )


@router.post("/ai-generate")
async def ai_generate(body: AIGenerateIn, request: Request, user: AdminUser, session: SessionDep) -> AIGenerateOut:
    """Generate test questions on a topic; optionally save them as a new test."""
    ai: AIService = request.app.state.ai
    generated = [asdict(question) for question in await ai.generate_questions(body.topic, body.count, body.difficulty)]
    test_id = None
    if body.create_test:
        assert body.title is not None  # enforced by the schema
        test = await assessments.create_test(
            session,
            title=body.title,
            duration_minutes=body.duration_minutes,
            description=f"Generated questions on {body.topic} ({body.difficulty}).",
            questions=generated,
        )
        test_id = test.id
    return AIGenerateOut.model_validate({"topic": body.topic, "questions": generated, "test_id": test_id})


@router.get("/jobs", response_model=JobListOut)
async def list_all_jobs(
    user: AdminUser, connection: ReadConnDep, page: Page = 1, page_size: PageSize = 20
) -> Response:
    """Every job, inactive ones included, newest first."""
    body = await jobs.list_jobs_json(
        connection, search=None, job_type=None, location=None, page=page, page_size=page_size,
        include_inactive=True,
    )
    return Response(body, media_type="application/json")


@router.post("/jobs", status_code=status.HTTP_201_CREATED)
async def create_job(body: JobCreateIn, user: AdminUser, session: SessionDep) -> AdminJobOut:
    """Publish a job."""
    job = await jobs.create_job(session, user.user_id, body.model_dump())
    return AdminJobOut.model_validate(jobs.job_dict(job))


@router.patch("/jobs/{job_id}")
async def update_job(job_id: int, body: JobUpdateIn, user: AdminUser, session: SessionDep) -> AdminJobOut:
    """Change the fields sent."""
    job = await jobs.update_job(session, job_id, body.changes())
    return AdminJobOut.model_validate(jobs.job_dict(job))


@router.delete("/jobs/{job_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_job(job_id: int, user: AdminUser, session: SessionDep) -> None:
    """Remove a job."""
    await jobs.delete_job(session, job_id)
