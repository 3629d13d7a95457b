"""Timed tests: what is available, and taking one."""

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.deps import AssessmentSessionDep, CacheDep, CandidateUser, CurrentUser, DatabaseDep
from app.domain import assessments, attempts
from app.domain.caching import ASSESSMENTS_AVAILABLE
from app.http_cache import cached_response
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

router = APIRouter(prefix="/api/tests", tags=["tests"])


@router.get("/available", response_model=list[AssessmentSummaryOut])
async def available_tests(
    user: CurrentUser, request: Request, cache: CacheDep, database: DatabaseDep
) -> Response:
    """Active tests with their duration and number of questions."""

    # The same list for every user: one shared entry, no connection taken on a hit.
    async def compute() -> bytes:
        async with database.read_connection("assessments") as connection:
            return await assessments.list_available_json(connection)

    return await cached_response(request, cache, ASSESSMENTS_AVAILABLE, "all", compute)


@router.post("/start")
async def start_test(
    body: StartIn, user: CandidateUser, session: AssessmentSessionDep, cache: CacheDep
) -> AttemptOut:
    """Start a timed attempt, or resume the open one; questions come without answers."""
    return AttemptOut.model_validate(
        await attempts.start_attempt(session, user.user_id, body.test_id, cache)
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
    attempt_id: int, body: AnswerIn, user: CandidateUser, session: AssessmentSessionDep
) -> AnswerOut:
    """Record (or replace) the answer to one question while the attempt is open."""
    answered_at = await attempts.save_answers(
        session, user.user_id, attempt_id, [(body.question_id, body.answer_text)]
    )
    return AnswerOut(attempt_id=attempt_id, question_id=body.question_id, answered_at=answered_at)
