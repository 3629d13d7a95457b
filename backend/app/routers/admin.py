"""Admin routes: dashboard, candidates, results, AI question generation and job management."""

from typing import Annotated

from fastapi import APIRouter, Query, Request, status
from starlette.responses import Response

from app.deps import (
    AdminSessionDep,
    AdminUser,
    AIDep,
    CacheDep,
    DatabaseDep,
    ReportConnDep,
    SettingsDep,
)
from app.domain import assessments, attempts, candidate_search, jobs, profiles, reports
from app.domain.caching import ADMIN_DASHBOARD, CANDIDATE_SEARCH
from app.http_cache import cached_response
from app.schemas.admin import (
    AdminAssessmentOut,
    AIGenerateIn,
    AIGenerateOut,
    AssessmentPolicyIn,
    CandidateListOut,
    CandidateSearchOut,
    DashboardOut,
    ResultListOut,
)
from app.schemas.common import ResourceId, SafeText
from app.schemas.job import AdminJobOut, JobCreateIn, JobListOut, JobUpdateIn
from app.schemas.pagination import Page, PageSize
from app.services.cache import make_key

router = APIRouter(prefix="/api/admin", tags=["admin"])


@router.get("/dashboard", response_model=DashboardOut)
async def dashboard(
    user: AdminUser, request: Request, cache: CacheDep, database: DatabaseDep
) -> Response:
    """Headline counts for the admin home page (cached briefly; the same for every admin)."""

    async def compute() -> bytes:
        async with database.report_connection() as connection:
            counts = await reports.dashboard(connection)
        return DashboardOut.model_validate(counts).model_dump_json().encode()

    return await cached_response(request, cache, ADMIN_DASHBOARD, "all", compute)


@router.get("/candidates")
async def list_candidates(
    user: AdminUser, connection: ReportConnDep, page: Page = 1, page_size: PageSize = 20
) -> CandidateListOut:
    """Candidates, newest first."""
    return CandidateListOut.model_validate(
        await profiles.list_candidates(connection, page=page, page_size=page_size)
    )


@router.get("/candidates/search", response_model=CandidateSearchOut)
async def search_candidates(
    user: AdminUser,
    request: Request,
    cache: CacheDep,
    database: DatabaseDep,
    q: Annotated[SafeText, Query(min_length=1, max_length=200)],
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Response:
    """Candidates ranked by how well their skills and summary match `q`."""

    async def compute() -> bytes:
        async with database.report_connection() as connection:
            items = await candidate_search.search_candidates(connection, q, limit)
        result = CandidateSearchOut.model_validate({"query": q, "items": items})
        return result.model_dump_json().encode()

    return await cached_response(request, cache, CANDIDATE_SEARCH, make_key(q, limit), compute)


@router.get("/results")
async def list_results(
    user: AdminUser,
    connection: ReportConnDep,
    test_id: Annotated[ResourceId | None, Query()] = None,
    page: Page = 1,
    page_size: PageSize = 20,
) -> ResultListOut:
    """Completed attempts with scores, newest first."""
    return ResultListOut.model_validate(
        await attempts.completed_results(
            connection, test_id=test_id, page=page, page_size=page_size
        )
    )


@router.post("/ai-generate")
async def ai_generate(
    body: AIGenerateIn,
    user: AdminUser,
    database: DatabaseDep,
    cache: CacheDep,
    ai: AIDep,
    settings: SettingsDep,
) -> AIGenerateOut:
    """Generate test questions on a topic; optionally save them as a new test."""
    model = f"{settings.ai_backend}:{settings.gemini_model}"
    generated = await assessments.generate_questions(
        cache, ai, model, body.topic, body.count, body.difficulty
    )
    test_id = None
    if body.create_test:
        assert body.title is not None  # enforced by the schema
        # A session only for the write: a request-long one would hold a place in the admin
        # area's share of the pool through the AI call (up to GEMINI_TIMEOUT_SECONDS).
        async with database.session("admin") as session:
            test = await assessments.create_test(
                session,
                title=body.title,
                duration_minutes=body.duration_minutes,
                description=f"Generated questions on {body.topic} ({body.difficulty}).",
                questions=generated,
                max_attempts=body.max_attempts,
                retake_cooldown_minutes=body.retake_cooldown_minutes,
            )
            await session.commit()
        test_id = test.id
    return AIGenerateOut.model_validate(
        {"topic": body.topic, "questions": generated, "test_id": test_id}
    )


@router.patch("/tests/{test_id}")
async def update_test_policy(
    test_id: ResourceId, body: AssessmentPolicyIn, user: AdminUser, session: AdminSessionDep
) -> AdminAssessmentOut:
    """Set a test's attempt policy (the fields sent; null restores the settings' default).
    Open attempts stay open; the policy applies to the next start."""
    changes = body.changes(nullable=frozenset({"max_attempts", "retake_cooldown_minutes"}))
    test = await assessments.update_test(session, test_id, changes)
    return AdminAssessmentOut.model_validate(assessments.assessment_dict(test))


@router.get("/jobs", response_model=JobListOut)
async def list_all_jobs(
    user: AdminUser, database: DatabaseDep, page: Page = 1, page_size: PageSize = 20
) -> Response:
    """Every job, inactive ones included, newest first."""
    body = await jobs.list_jobs_json(
        database,
        search=None,
        job_type=None,
        location=None,
        page=page,
        page_size=page_size,
        include_inactive=True,
    )
    return Response(body, media_type="application/json")


@router.post("/jobs", status_code=status.HTTP_201_CREATED)
async def create_job(body: JobCreateIn, user: AdminUser, session: AdminSessionDep) -> AdminJobOut:
    """Publish a job."""
    job = await jobs.create_job(session, user.user_id, body.model_dump())
    return AdminJobOut.model_validate(jobs.job_dict(job))


@router.patch("/jobs/{job_id}")
async def update_job(
    job_id: ResourceId, body: JobUpdateIn, user: AdminUser, session: AdminSessionDep
) -> AdminJobOut:
    """Change the fields sent."""
    job = await jobs.update_job(session, job_id, body.changes())
    return AdminJobOut.model_validate(jobs.job_dict(job))


@router.delete("/jobs/{job_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_job(job_id: ResourceId, user: AdminUser, session: AdminSessionDep) -> None:
    """Remove a job."""
    await jobs.delete_job(session, job_id)
