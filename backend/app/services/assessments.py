"""Timed tests: availability, attempts, answers and scoring."""

from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Insert, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.errors import Conflict, InvalidInput, NotFound
from app.models import Assessment, Attempt, AttemptAnswer, Notification, Question
from app.models.base import utcnow
from app.services.cache import TEST_CONFIG, Cache, make_key


async def list_available_json(connection: AsyncConnection) -> bytes:
    """Active tests with their question counts, serialised once."""
    statement = (
        select(
            Assessment.id,
            Assessment.title,
            Assessment.description,
            Assessment.duration_minutes,
            func.count(Question.id).label("question_count"),
        )
        .outerjoin(Question, Question.test_id == Assessment.id)
        .where(Assessment.active.is_(True))
        .group_by(Assessment.id)
        .order_by(Assessment.id)
    )
    rows = (await connection.execute(statement)).mappings().all()
    return orjson.dumps([dict(row) for row in rows], option=orjson.OPT_UTC_Z)


async def _questions(session: AsyncSession, test_id: int) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(Question.id, Question.position, Question.text, Question.options, Question.points)
        .where(Question.test_id == test_id)
        .order_by(Question.position, Question.id)
    )
    return [dict(row) for row in rows.mappings()]


async def _attempt_view(session: AsyncSession, cache: Cache, attempt: Attempt) -> dict[str, Any]:
    test_id = attempt.test_id
    # A test's questions (without answers) are the same for every candidate: cached per test.
    questions = await cache.get_or_compute(
        TEST_CONFIG, make_key(test_id), lambda: _questions(session, test_id)
    )
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
    session.add(
        Notification(
            user_id=user_id,
            kind="test_completed",
            title="Test completed",
            body=f"You scored {attempt.score:g} of {attempt.max_score:g} on {title}.",
        )
    )
    await session.flush()
    return _result(attempt)


async def create_test(
    session: AsyncSession,
    *,
    title: str,
    duration_minutes: int,
    description: str | None,
    questions: list[dict[str, Any]],
) -> Assessment:
    """A new active test with its questions (each: text, options, correct_answer, points)."""
    test = Assessment(
        title=title, description=description, duration_minutes=duration_minutes, active=True
    )
    session.add(test)
    await session.flush()
    session.add_all(
        Question(
            test_id=test.id,
            position=position,
            text=question["text"],
            options=list(question["options"]),
            correct_answer=question["correct_answer"],
            points=question["points"],
        )
        for position, question in enumerate(questions, start=1)
    )
    await session.flush()
    return test
