"""Timed tests: what is available, and taking one."""

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.deps import (
    AssessmentSessionDep,
    CacheDep,
    CandidateUser,
    CurrentUser,
    DatabaseDep,
    SettingsDep,
)
from app.domain import assessments, attempts
from app.domain.caching import ASSESSMENTS_AVAILABLE
from app.http_cache import etag_matches
from app.schemas.assessment import (
    AnswerIn,
    AnswerOut,
    AssessmentSummaryOut,
    AttemptOut,
    CompleteIn,
    ResultOut,
    StartIn,
    SubmitIn,
    SubmitOut,
)
from app.schemas.common import ResourceId
from app.services.cache import content_etag

router = APIRouter(prefix="/api/tests", tags=["tests"])


@router.get("/available", response_model=list[AssessmentSummaryOut])
async def available_tests(
    user: CurrentUser,
    request: Request,
    cache: CacheDep,
    database: DatabaseDep,
    settings: SettingsDep,
) -> Response:
    """Active tests with their duration, number of questions and attempt policy, and the
    caller's attempts at each (used, remaining, when a retake is possible)."""

    # The catalogue is the same for every user: one shared entry; the caller's attempts are
    # one indexed read on top.
    async def compute() -> bytes:
        async with database.read_connection("assessments") as connection:
            return await assessments.list_available_json(connection)

    catalogue = await cache.http_body(ASSESSMENTS_AVAILABLE, "all", compute)
    body = await attempts.available_json(
        database, catalogue.body, user.user_id, attempts.policy_defaults(settings)
    )
    etag = content_etag(body)
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers={"ETag": etag})
    return Response(body, media_type="application/json", headers={"ETag": etag})


@router.post("/start")
async def start_test(
    body: StartIn,
    user: CandidateUser,
    session: AssessmentSessionDep,
    cache: CacheDep,
    settings: SettingsDep,
) -> AttemptOut:
    """Start a timed attempt, or resume the open one; questions come without answers.

    A new attempt must fit the test's attempt policy: 409 `attempt_limit_reached`, or 409
    `retake_cooldown` with Retry-After (seconds until a retake is possible).
    """
    return AttemptOut.model_validate(
        await attempts.start_attempt(
            session, user.user_id, body.test_id, cache, attempts.policy_defaults(settings)
        )
    )


@router.post("/submit")
async def submit_answers(
    body: SubmitIn, user: CandidateUser, session: AssessmentSessionDep
) -> SubmitOut:
    """Save several answers at once (all or none); the attempt stays open until completed."""
    await attempts.save_answers(
        session,
        user.user_id,
        body.attempt_id,
        [(a.question_id, a.answer_text) for a in body.answers],
    )
    return SubmitOut(attempt_id=body.attempt_id, saved=len(body.answers))


@router.post("/complete")
async def complete_test(
    body: CompleteIn, user: CandidateUser, session: AssessmentSessionDep
) -> ResultOut:
    """Finish and score the attempt; calling again returns the same result."""
    return ResultOut.model_validate(
        await attempts.complete_attempt(session, user.user_id, body.attempt_id)
    )


@router.post("/{attempt_id}/answer")
async def answer_question(
    attempt_id: ResourceId, body: AnswerIn, user: CandidateUser, session: AssessmentSessionDep
) -> AnswerOut:
    """Record (or replace) the answer to one question while the attempt is open."""
    answered_at = await attempts.save_answers(
        session, user.user_id, attempt_id, [(body.question_id, body.answer_text)]
    )
    return AnswerOut(attempt_id=attempt_id, question_id=body.question_id, answered_at=answered_at)
