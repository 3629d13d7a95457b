"""Candidates' attempts at timed tests: starting, answering, completing, and their lifecycle."""

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Insert, bindparam, case, delete, false, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.config import Settings
from app.database import CompiledRead, Database
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


@dataclass(frozen=True)
class PolicyDefaults:
    """The attempt policy of a test that sets none (ASSESSMENT_* settings)."""

    max_attempts: int
    retake_cooldown_minutes: int


def policy_defaults(settings: Settings) -> PolicyDefaults:
    """The deployment's default attempt policy."""
    return PolicyDefaults(
        settings.assessment_max_attempts, settings.assessment_retake_cooldown_minutes
    )


def effective_policy(
    max_attempts: int | None, retake_cooldown_minutes: int | None, defaults: PolicyDefaults
) -> PolicyDefaults:
    """A test's own policy, its unset parts taken from `defaults`."""
    return PolicyDefaults(
        defaults.max_attempts if max_attempts is None else max_attempts,
        defaults.retake_cooldown_minutes
        if retake_cooldown_minutes is None
        else retake_cooldown_minutes,
    )


# When an attempt stopped counting as open: completion, or its time running out.
_FINISHED_AT = func.coalesce(Attempt.completed_at, Attempt.expires_at)


async def _find_open_attempt(session: AsyncSession, user_id: int, test_id: int) -> Attempt | None:
    result: Attempt | None = await session.scalar(
        select(Attempt)
        .where(
            Attempt.user_id == user_id, Attempt.test_id == test_id, Attempt.status == "in_progress"
        )
        .with_for_update()
    )
    return result


async def _serialize_starts(session: AsyncSession, user_id: int) -> None:
    """Hold the candidate's start lock until the transaction ends, so that counting their
    attempts and adding one is atomic against their other starts.

    The open-attempt unique index alone only stops two *open* attempts: a start that counted
    before another start committed (and that attempt was completed) could still exceed the
    limit. Postgres: the user's row, FOR NO KEY UPDATE (READ COMMITTED: the count runs as a
    later statement, so it sees what the previous holder committed; foreign-key checks on the
    user's other rows take KEY SHARE and are not blocked). SQLite has no row locks: a write that
    changes nothing takes the database's write lock, and the count then reads the newest data.
    """
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(
            select(User.id).where(User.id == user_id).with_for_update(key_share=True)
        )
    else:
        await session.execute(
            update(Attempt).where(Attempt.user_id == user_id, false()).values(status=Attempt.status)
        )


async def _check_policy(
    session: AsyncSession, user_id: int, test: Assessment, defaults: PolicyDefaults, now: datetime
) -> None:
    """409 if the candidate may not start another attempt at `test` now."""
    policy = effective_policy(test.max_attempts, test.retake_cooldown_minutes, defaults)
    used, last_finished = (
        await session.execute(
            select(func.count(), func.max(_FINISHED_AT)).where(
                Attempt.user_id == user_id, Attempt.test_id == test.id
            )
        )
    ).one()
    if used >= policy.max_attempts:
        raise Conflict(
            "You have used every attempt this test allows.",
            code="attempt_limit_reached",
            max_attempts=policy.max_attempts,
            attempts_used=used,
        )
    if last_finished is None or policy.retake_cooldown_minutes == 0:
        return
    retake_at = last_finished + timedelta(minutes=policy.retake_cooldown_minutes)
    if retake_at > now:
        wait = math.ceil((retake_at - now).total_seconds())
        raise Conflict(
            "You can retake this test later.",
            code="retake_cooldown",
            headers={"Retry-After": str(wait)},
            retry_after=wait,
            retake_at=retake_at.isoformat().replace("+00:00", "Z"),
        )


async def start_attempt(
    session: AsyncSession, user_id: int, test_id: int, cache: Cache, defaults: PolicyDefaults
) -> dict[str, Any]:
    """Start (or resume) the candidate's one open attempt at a test.

    Resuming the open attempt is always allowed; a new attempt must fit the test's attempt
    policy (409 `attempt_limit_reached`, or 409 `retake_cooldown` with Retry-After).
    """
    test = await session.get(Assessment, test_id)
    if test is None or not test.active:
        raise NotFound("Test not found.")
    await _serialize_starts(session, user_id)
    now = utcnow()
    existing = await _find_open_attempt(session, user_id, test_id)
    if existing is not None:
        if existing.expires_at > now:
            return await _attempt_view(session, cache, existing)
        existing.status = "abandoned"  # its time ran out unfinished; it counts as an attempt
        await session.flush()
    await _check_policy(session, user_id, test, defaults, now)
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


_USAGE_COLUMNS: tuple[Any, ...] = (
    Attempt.test_id.label("test_id"),
    func.count().label("used"),
    func.count().filter(Attempt.status == "in_progress").label("open"),
    func.max(case((Attempt.status != "in_progress", _FINISHED_AT))).label("last_finished"),
)
_USAGE_READER = CompiledRead(
    select(*_USAGE_COLUMNS).where(Attempt.user_id == bindparam("user_id")).group_by(Attempt.test_id)
)


async def usage_by_test(database: Database, user_id: int) -> dict[int, dict[str, Any]]:
    """The candidate's attempts per test: how many, whether one is open, when the last ended."""
    rows = await _USAGE_READER.fetch(database, user_id=user_id)
    return {row["test_id"]: row for row in rows}


def with_usage(
    catalogue: list[dict[str, Any]],
    usage: dict[int, dict[str, Any]],
    defaults: PolicyDefaults,
    now: datetime,
) -> list[dict[str, Any]]:
    """The available tests with each one's policy and the candidate's attempts at it."""
    tests = []
    for test in catalogue:
        policy = effective_policy(test["max_attempts"], test["retake_cooldown_minutes"], defaults)
        mine = usage.get(test["id"], {"used": 0, "open": 0, "last_finished": None})
        remaining = max(0, policy.max_attempts - mine["used"])
        retake_at = None
        if remaining and not mine["open"] and mine["last_finished"] is not None:
            retake_at = mine["last_finished"] + timedelta(minutes=policy.retake_cooldown_minutes)
            if retake_at <= now:
                retake_at = None
        tests.append(
            {
                **test,
                "max_attempts": policy.max_attempts,
                "retake_cooldown_minutes": policy.retake_cooldown_minutes,
                "attempts_used": mine["used"],
                "attempts_remaining": remaining,
                "attempt_in_progress": mine["open"] > 0,
                "can_start": mine["open"] > 0 or (remaining > 0 and retake_at is None),
                "next_attempt_at": retake_at,
            }
        )
    return tests


async def available_json(
    database: Database, catalogue: bytes, user_id: int, defaults: PolicyDefaults
) -> bytes:
    """The shared catalogue of available tests (JSON), with the caller's attempts at each."""
    usage = await usage_by_test(database, user_id)
    tests = with_usage(orjson.loads(catalogue), usage, defaults, utcnow())
    return orjson.dumps(tests, option=orjson.OPT_UTC_Z)


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
    """Insert or replace answers (all or none); returns the time they were recorded.

    Each answer must be one of its question's options (422 `invalid_option`), unless the
    question has none (free text). Nothing tells the candidate whether an answer is right.
    """
    attempt = await _lock_open_attempt(session, user_id, attempt_id)
    question_ids = [question_id for question_id, _ in answers]
    if len(set(question_ids)) != len(question_ids):
        raise InvalidInput(
            "Each question may be answered once per request.", code="duplicate_question"
        )
    options: dict[int, list[Any]] = {
        question_id: question_options
        for question_id, question_options in await session.execute(
            select(Question.id, Question.options).where(
                Question.test_id == attempt.test_id, Question.id.in_(question_ids)
            )
        )
    }
    unknown = sorted(set(question_ids) - options.keys())
    if unknown:
        raise InvalidInput(
            "Some questions do not belong to this test.",
            code="unknown_question",
            question_ids=unknown,
        )
    # Exactly one of the options as stored (case counts; the request schema already strips
    # surrounding whitespace, as the AI generator does for options). No options: free text.
    not_an_option = sorted(
        question_id
        for question_id, text in answers
        if options[question_id] and text not in options[question_id]
    )
    if not_an_option:
        raise InvalidInput(
            "Each answer must be one of the question's options.",
            code="invalid_option",
            question_ids=not_an_option,
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
