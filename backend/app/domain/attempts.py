"""Candidates' attempts at timed tests: starting, answering, completing, and their lifecycle."""

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Insert, case, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.domain import assessments, notifications
from app.errors import Conflict, InvalidInput, NotFound
from app.models import Assessment, Attempt, AttemptAnswer, Question, User
from app.models.base import utcnow
from app.services.cache import Cache


async def _attempt_view(session: AsyncSession, cache: Cache, attempt: Attempt) -> dict[str, Any]:
    test_id = attempt.test_id
    questions = await assessments.questions_for_candidates(session, cache, test_id)
    return {
        "attempt_id": attempt.id,
        "test_id": test_id,
        "status": attempt.status,
        "started_at": attempt.started_at,
        "expires_at": attempt.expires_at,
        "questions": questions,
    }


async def _find_open_attempt(session: AsyncSession, user_id: int, test_id: int) -> Attempt | None:
    result: Attempt | None = await session.scalar(
        select(Attempt)
        .where(
            Attempt.user_id == user_id, Attempt.test_id == test_id, Attempt.status == "in_progress"
        )
        .with_for_update()
    )
    return result


async def start_attempt(
    session: AsyncSession, user_id: int, test_id: int, cache: Cache
) -> dict[str, Any]:
    """Start (or resume) the candidate's one open attempt at a test."""
    test = await session.get(Assessment, test_id)
    if test is None or not test.active:
        raise NotFound("Test not found.")
    now = utcnow()
    existing = await _find_open_attempt(session, user_id, test_id)
    if existing is not None:
        if existing.expires_at > now:
            return await _attempt_view(session, cache, existing)
        existing.status = "abandoned"  # its time ran out unfinished; a fresh attempt may start
        await session.flush()
    attempt = Attempt(
        test_id=test_id,
        user_id=user_id,
        status="in_progress",
        started_at=now,
        expires_at=now + timedelta(minutes=test.duration_minutes),
    )
    try:
        async with session.begin_nested():
            session.add(attempt)
            await session.flush()
    except IntegrityError:
        # A concurrent start won the unique open-attempt index: resume that one.
        winner = await _find_open_attempt(session, user_id, test_id)
        if winner is None:
            raise
        attempt = winner
    return await _attempt_view(session, cache, attempt)


async def _lock_open_attempt(session: AsyncSession, user_id: int, attempt_id: int) -> Attempt:
    """The caller's attempt, share-locked against a concurrent completion, if it takes answers."""
    attempt: Attempt | None = await session.scalar(
        select(Attempt).where(Attempt.id == attempt_id).with_for_update(read=True)
    )
    if attempt is None or attempt.user_id != user_id:
        raise NotFound("Attempt not found.")
    if attempt.status == "completed":
        raise Conflict("This test attempt is already completed.", code="attempt_completed")
    if attempt.status == "abandoned":
        raise Conflict("This test attempt was abandoned.", code="attempt_abandoned")
    if attempt.expires_at <= utcnow():
        raise Conflict("The time for this test has run out.", code="attempt_expired")
    return attempt


def _upsert_answers(dialect: str, rows: list[dict[str, Any]]) -> Insert:
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(AttemptAnswer).values(rows)
    return statement.on_conflict_do_update(
        index_elements=[AttemptAnswer.attempt_id, AttemptAnswer.question_id],
        set_={
            "answer_text": statement.excluded.answer_text,
            "answered_at": statement.excluded.answered_at,
        },
    )


async def save_answers(
    session: AsyncSession, user_id: int, attempt_id: int, answers: list[tuple[int, str]]
) -> datetime:
    """Insert or replace answers (all or none); returns the time they were recorded."""
    attempt = await _lock_open_attempt(session, user_id, attempt_id)
    question_ids = [question_id for question_id, _ in answers]
    if len(set(question_ids)) != len(question_ids):
        raise InvalidInput(
            "Each question may be answered once per request.", code="duplicate_question"
        )
    known = set(
        await session.scalars(
            select(Question.id).where(
                Question.test_id == attempt.test_id, Question.id.in_(question_ids)
            )
        )
    )
    unknown = sorted(set(question_ids) - known)
    if unknown:
        raise InvalidInput(
            "Some questions do not belong to this test.",
            code="unknown_question",
            question_ids=unknown,
        )
    now = utcnow()
    rows = [
        {
            "attempt_id": attempt.id,
            "question_id": question_id,
            "answer_text": text,
            "answered_at": now,
        }
        for question_id, text in answers
    ]
    await session.execute(_upsert_answers(session.get_bind().dialect.name, rows))
    return now


def _result(attempt: Attempt) -> dict[str, Any]:
    return {
        "attempt_id": attempt.id,
        "test_id": attempt.test_id,
        "status": attempt.status,
        "score": attempt.score,
        "max_score": attempt.max_score,
        "completed_at": attempt.completed_at,
    }


async def complete_attempt(session: AsyncSession, user_id: int, attempt_id: int) -> dict[str, Any]:
    """Score the attempt exactly once; later calls return the same result."""
    now = utcnow()
    # The conditional UPDATE is the single decision point: concurrent callers queue on the row
    # and only the first finds it in progress.
    claimed = await session.execute(
        update(Attempt)
        .where(
            Attempt.id == attempt_id, Attempt.user_id == user_id, Attempt.status == "in_progress"
        )
        .values(status="completed", completed_at=now)
        .returning(Attempt.test_id)
    )
    test_id = claimed.scalar_one_or_none()
    if test_id is None:
        attempt = await session.get(Attempt, attempt_id, populate_existing=True)
        if attempt is None or attempt.user_id != user_id:
            raise NotFound("Attempt not found.")
        if attempt.status != "completed":
            raise Conflict("This test attempt was abandoned.", code="attempt_abandoned")
        return _result(attempt)

    score = await session.scalar(
        select(func.coalesce(func.sum(Question.points), 0))
        .select_from(AttemptAnswer)
        .join(Question, Question.id == AttemptAnswer.question_id)
        .where(
            AttemptAnswer.attempt_id == attempt_id,
            func.lower(func.trim(AttemptAnswer.answer_text))
            == func.lower(func.trim(Question.correct_answer)),
        )
    )
    max_score = await session.scalar(
        select(func.coalesce(func.sum(Question.points), 0)).where(Question.test_id == test_id)
    )
    attempt = await session.get(Attempt, attempt_id, populate_existing=True)
    assert attempt is not None
    attempt.score = float(score or 0)
    attempt.max_score = float(max_score or 0)
    title = await session.scalar(select(Assessment.title).where(Assessment.id == test_id))
    notifications.notify(
        session,
        user_id,
        "test_completed",
        "Test completed",
        f"You scored {attempt.score:g} of {attempt.max_score:g} on {title}.",
    )
    await session.flush()
    return _result(attempt)


async def abandon_expired(session: AsyncSession, expired_before: datetime) -> int:
    """Open attempts whose time ran out before `expired_before` become abandoned; the count."""
    abandoned = await session.execute(
        update(Attempt)
        .where(Attempt.status == "in_progress", Attempt.expires_at < expired_before)
        .values(status="abandoned")
    )
    return int(abandoned.rowcount)  # type: ignore[attr-defined]


async def delete_abandoned(session: AsyncSession, expired_before: datetime) -> int:
    """Abandoned attempts that expired before `expired_before` are deleted; the count."""
    removed = await session.execute(
        delete(Attempt).where(Attempt.status == "abandoned", Attempt.expires_at < expired_before)
    )
    return int(removed.rowcount)  # type: ignore[attr-defined]


async def attempt_counts(connection: AsyncConnection) -> dict[str, Any]:
    """Attempts in progress and completed, and the completed ones' mean percentage score."""
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
        "attempts_in_progress": int(in_progress),
        "attempts_completed": int(completed),
        "average_score_percent": round(float(average), 2) if average is not None else None,
    }


async def activity_between(session: AsyncSession, start: datetime, end: datetime) -> dict[str, Any]:
    """Attempts started and completed in [start, end), and the completed ones' mean score."""

    def within(column: Any) -> Any:
        return (column >= start) & (column < end)

    started, completed, average = (
        await session.execute(
            select(
                func.count().filter(within(Attempt.started_at)),
                func.count().filter(within(Attempt.completed_at), Attempt.status == "completed"),
                func.avg(Attempt.score * 100.0 / Attempt.max_score).filter(
                    within(Attempt.completed_at),
                    Attempt.status == "completed",
                    Attempt.max_score > 0,
                ),
            ).select_from(Attempt)
        )
    ).one()
    return {
        "attempts_started": started or 0,
        "attempts_completed": completed or 0,
        "average_score_percent": round(float(average), 2) if average is not None else None,
    }


async def completed_results(
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
