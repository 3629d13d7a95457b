"""Test integrity: the attempt policy (limit, cooldown), answers limited to the options, and
nothing that tells a candidate which answers were right."""

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from fastapi import FastAPI
from sqlalchemy import select, update

from app.main import create_app
from app.models import Assessment, Attempt, AttemptAnswer, Question
from app.models.base import utcnow
from tests.conftest import make_settings
from tests.support.apps import AppFactory, client_for
from tests.support.attempts import (
    answer_question,
    complete_attempt,
    start_attempt,
    submit_answers,
)
from tests.support.database import asyncpg_dsn, migrate
from tests.support.factories import (
    admin_token,
    auth,
    candidate_token,
    create_test,
    register_candidate,
)
from tests.support.wait import wait_until

DEFAULT_COOLDOWN = 24 * 60


async def _set_policy(
    app: FastAPI, test_id: int, max_attempts: int | None, cooldown: int | None
) -> None:
    async with app.state.resources.database.sessionmaker() as session:
        await session.execute(
            update(Assessment)
            .where(Assessment.id == test_id)
            .values(max_attempts=max_attempts, retake_cooldown_minutes=cooldown)
        )
        await session.commit()


async def _available(client: httpx.AsyncClient, token: str, test_id: int) -> dict[str, Any]:
    response = await client.get("/api/tests/available", headers=auth(token))
    assert response.status_code == 200, response.text
    (entry,) = [test for test in response.json() if test["id"] == test_id]
    return entry  # type: ignore[no-any-return]


async def _attempts_of(app: FastAPI, test_id: int) -> list[str]:
    async with app.state.resources.database.sessionmaker() as session:
        return list(await session.scalars(select(Attempt.status).where(Attempt.test_id == test_id)))


async def _race_retakes(
    client: httpx.AsyncClient, token: str, test_id: int, takers: int
) -> list[str]:
    """`takers` concurrent loops, each starting and completing attempts until a start is
    refused; returns the refusals' codes.

    Each start is completed at once, so a start racing another's count-then-insert finds no open
    attempt to collide with: only the start lock keeps the count right.
    """
    refusals: list[str] = []

    async def take_until_refused() -> None:
        for _ in range(6):
            started = await start_attempt(client, token, test_id)
            if started.status_code == 409:
                refusals.append(started.json()["error"]["code"])
                return
            assert started.status_code == 200, started.text
            completed = await complete_attempt(client, token, started.json()["attempt_id"])
            assert completed.status_code == 200, completed.text

    await asyncio.gather(*(take_until_refused() for _ in range(takers)))
    return refusals


async def test_default_policy_is_one_attempt(client: httpx.AsyncClient, app: FastAPI) -> None:
    test, _ = await create_test(app)
    token = await candidate_token(client)
    first = await start_attempt(client, token, test.id)
    assert first.status_code == 200
    attempt_id = first.json()["attempt_id"]
    during = await _available(client, token, test.id)
    assert (during["attempts_used"], during["attempts_remaining"]) == (1, 0)
    assert during["attempt_in_progress"] and during["can_start"]  # resuming is allowed

    assert (await complete_attempt(client, token, attempt_id)).status_code == 200
    refused = await start_attempt(client, token, test.id)
    assert refused.status_code == 409
    assert refused.json()["error"] == {
        "code": "attempt_limit_reached",
        "message": "You have used every attempt this test allows.",
        "max_attempts": 1,
        "attempts_used": 1,
    }
    after = await _available(client, token, test.id)
    assert after["max_attempts"] == 1 and after["retake_cooldown_minutes"] == DEFAULT_COOLDOWN
    assert (after["attempts_used"], after["attempts_remaining"]) == (1, 0)
    assert not after["attempt_in_progress"] and not after["can_start"]
    assert after["next_attempt_at"] is None
    # Another candidate is not affected.
    other = await candidate_token(client)
    assert (await start_attempt(client, other, test.id)).status_code == 200


async def test_an_expired_attempt_counts_as_used(client: httpx.AsyncClient, app: FastAPI) -> None:
    test, _ = await create_test(app)
    token = await candidate_token(client)
    attempt_id = (await start_attempt(client, token, test.id)).json()["attempt_id"]
    async with app.state.resources.database.sessionmaker() as session:
        await session.execute(
            update(Attempt)
            .where(Attempt.id == attempt_id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        await session.commit()
    refused = await start_attempt(client, token, test.id)
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "attempt_limit_reached"
    assert await _attempts_of(app, test.id) == ["in_progress"]  # nothing changed by the refusal


async def test_retake_cooldown_with_retry_after(client: httpx.AsyncClient, app: FastAPI) -> None:
    test, _ = await create_test(app)
    await _set_policy(app, test.id, max_attempts=3, cooldown=60)
    token = await candidate_token(client)
    first = (await start_attempt(client, token, test.id)).json()["attempt_id"]
    completed = (await complete_attempt(client, token, first)).json()

    refused = await start_attempt(client, token, test.id)
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert error["code"] == "retake_cooldown"
    wait = int(refused.headers["Retry-After"])
    assert error["retry_after"] == wait and 0 < wait <= 3600
    retake_at = datetime.fromisoformat(completed["completed_at"]) + timedelta(minutes=60)
    assert datetime.fromisoformat(error["retake_at"]) == retake_at
    listed = await _available(client, token, test.id)
    assert (listed["attempts_used"], listed["attempts_remaining"]) == (1, 2)
    assert not listed["can_start"]
    assert datetime.fromisoformat(listed["next_attempt_at"]) == retake_at

    # The cooldown over (the completion moved back), the retake starts.
    async with app.state.resources.database.sessionmaker() as session:
        await session.execute(
            update(Attempt)
            .where(Attempt.id == first)
            .values(completed_at=utcnow() - timedelta(minutes=61))
        )
        await session.commit()
    listed = await _available(client, token, test.id)
    assert listed["can_start"] and listed["next_attempt_at"] is None
    second = await start_attempt(client, token, test.id)
    assert second.status_code == 200 and second.json()["attempt_id"] != first


async def test_cooldown_counts_from_an_abandoned_attempts_end(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    test, _ = await create_test(app)
    await _set_policy(app, test.id, max_attempts=2, cooldown=30)
    token = await candidate_token(client)
    attempt_id = (await start_attempt(client, token, test.id)).json()["attempt_id"]
    ended = utcnow() - timedelta(minutes=10)
    async with app.state.resources.database.sessionmaker() as session:
        await session.execute(
            update(Attempt).where(Attempt.id == attempt_id).values(expires_at=ended)
        )
        await session.commit()
    refused = await start_attempt(client, token, test.id)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "retake_cooldown"
    assert 0 < int(refused.headers["Retry-After"]) <= 20 * 60


async def test_resuming_is_allowed_whatever_the_policy(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    test, _ = await create_test(app)
    token = await candidate_token(client)
    attempt_id = (await start_attempt(client, token, test.id)).json()["attempt_id"]
    # Tightened while the attempt is open: it can still be resumed and completed.
    admin = auth(await admin_token(app, client))
    patched = await client.patch(
        f"/api/admin/tests/{test.id}",
        headers=admin,
        json={"max_attempts": 1, "retake_cooldown_minutes": 7 * 24 * 60},
    )
    assert patched.status_code == 200, patched.text
    resumed = await asyncio.gather(*(start_attempt(client, token, test.id) for _ in range(5)))
    assert {r.status_code for r in resumed} == {200}
    assert {r.json()["attempt_id"] for r in resumed} == {attempt_id}
    assert (await complete_attempt(client, token, attempt_id)).status_code == 200


async def test_concurrent_starts_never_exceed_the_limit(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    test, _ = await create_test(app, questions=1)
    await _set_policy(app, test.id, max_attempts=3, cooldown=0)
    token = await candidate_token(client)
    refusals = await _race_retakes(client, token, test.id, takers=8)
    assert await _attempts_of(app, test.id) == ["completed"] * 3
    assert refusals == ["attempt_limit_reached"] * 8


async def _lock_waiters(postgres_url: str) -> int:
    connection = await asyncpg.connect(asyncpg_dsn(postgres_url))
    try:
        waiting: int = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
    finally:
        await connection.close()
    return waiting


async def test_a_start_counts_after_the_candidates_other_start_commits(
    app_with: AppFactory, postgres_url: str
) -> None:
    # The interleaving the gathered starts above rarely hit, made certain: another start of the
    # same candidate has counted, added an attempt and had it completed, but not yet committed.
    async with app_with(db_lock_timeout_ms=60_000) as app, client_for(app) as client:
        test, _ = await create_test(app)
        await _set_policy(app, test.id, max_attempts=1, cooldown=0)
        registered = await register_candidate(client)
        token, user_id = registered["access_token"], int(registered["user"]["id"])
        other = await asyncpg.connect(asyncpg_dsn(postgres_url))
        try:
            transaction = other.transaction()
            await transaction.start()
            await other.execute("SELECT id FROM users WHERE id = $1 FOR NO KEY UPDATE", user_id)
            await other.execute(
                "INSERT INTO test_attempts (test_id, user_id, status, started_at, expires_at,"
                " completed_at) VALUES ($1, $2, 'completed', now(), now(), now())",
                test.id,
                user_id,
            )
            start = asyncio.create_task(start_attempt(client, token, test.id))

            async def parked() -> bool:
                return await _lock_waiters(postgres_url) == 1

            await wait_until(parked, within=10, what="the start to wait for the other one")
            await transaction.commit()
        finally:
            await other.close()
        refused = await start
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "attempt_limit_reached"
        assert await _attempts_of(app, test.id) == ["completed"]


async def test_concurrent_first_starts_make_one_attempt(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    test, _ = await create_test(app)
    token = await candidate_token(client)
    started = await asyncio.gather(*(start_attempt(client, token, test.id) for _ in range(10)))
    assert {r.status_code for r in started} == {200}
    assert len({r.json()["attempt_id"] for r in started}) == 1
    assert await _attempts_of(app, test.id) == ["in_progress"]


async def test_admins_set_the_policy(client: httpx.AsyncClient, app: FastAPI) -> None:
    admin = auth(await admin_token(app, client))
    created = await client.post(
        "/api/admin/ai-generate",
        headers=admin,
        json={
            "topic": "sql joins",
            "count": 2,
            "create_test": True,
            "title": "SQL",
            "max_attempts": 2,
            "retake_cooldown_minutes": 0,
        },
    )
    assert created.status_code == 200, created.text
    test_id = created.json()["test_id"]
    candidate = await candidate_token(client)
    listed = await _available(client, candidate, test_id)
    assert (listed["max_attempts"], listed["retake_cooldown_minutes"]) == (2, 0)
    assert listed["attempts_remaining"] == 2

    first = (await start_attempt(client, candidate, test_id)).json()["attempt_id"]
    await complete_attempt(client, candidate, first)
    assert (await start_attempt(client, candidate, test_id)).status_code == 200  # no cooldown

    patched = await client.patch(
        f"/api/admin/tests/{test_id}", headers=admin, json={"retake_cooldown_minutes": 90}
    )
    assert patched.status_code == 200
    assert patched.json()["max_attempts"] == 2 and patched.json()["retake_cooldown_minutes"] == 90
    reset = await client.patch(
        f"/api/admin/tests/{test_id}",
        headers=admin,
        json={"max_attempts": None, "retake_cooldown_minutes": None},
    )
    assert reset.json()["max_attempts"] is None and reset.json()["retake_cooldown_minutes"] is None
    listed = await _available(client, candidate, test_id)
    assert (listed["max_attempts"], listed["retake_cooldown_minutes"]) == (1, DEFAULT_COOLDOWN)
    assert listed["attempts_used"] == 2 and listed["attempts_remaining"] == 0

    for body in (
        {"max_attempts": 0},
        {"max_attempts": 101},
        {"retake_cooldown_minutes": -1},
        {"max_attempts": "many"},
        {"title": "Renamed"},
    ):
        response = await client.patch(f"/api/admin/tests/{test_id}", headers=admin, json=body)
        assert response.status_code == 422, body
    invalid_create = await client.post(
        "/api/admin/ai-generate",
        headers=admin,
        json={"topic": "sql", "create_test": True, "title": "T", "max_attempts": 0},
    )
    assert invalid_create.status_code == 422
    missing = await client.patch("/api/admin/tests/987654", headers=admin, json={"max_attempts": 3})
    assert missing.status_code == 404
    forbidden = await client.patch(
        f"/api/admin/tests/{test_id}", headers=auth(candidate), json={"max_attempts": 100}
    )
    assert forbidden.status_code == 403


async def test_policy_changes_reach_the_cached_catalogue(
    app_with: AppFactory, redis_url: str
) -> None:
    async with (
        app_with(cache_enabled=True, redis_url=redis_url) as app,
        client_for(app) as client,
    ):
        test, _ = await create_test(app)
        candidate = await candidate_token(client)
        assert (await _available(client, candidate, test.id))["max_attempts"] == 1
        admin = auth(await admin_token(app, client))
        patched = await client.patch(
            f"/api/admin/tests/{test.id}", headers=admin, json={"max_attempts": 5}
        )
        assert patched.status_code == 200
        listed = await _available(client, candidate, test.id)
        assert listed["max_attempts"] == 5 and listed["attempts_remaining"] == 5
        # Each candidate's own counts on the shared entry, with its own ETag.
        await start_attempt(client, candidate, test.id)
        mine = await client.get("/api/tests/available", headers=auth(candidate))
        again = await client.get(
            "/api/tests/available",
            headers={**auth(candidate), "If-None-Match": mine.headers["ETag"]},
        )
        assert again.status_code == 304
        other = await client.get(
            "/api/tests/available",
            headers={**auth(await candidate_token(client)), "If-None-Match": mine.headers["ETag"]},
        )
        assert other.status_code == 200 and other.json()[0]["attempts_used"] == 0


async def _stored_answers(app: FastAPI, attempt_id: int) -> dict[int, str]:
    async with app.state.resources.database.sessionmaker() as session:
        rows = await session.execute(
            select(AttemptAnswer.question_id, AttemptAnswer.answer_text).where(
                AttemptAnswer.attempt_id == attempt_id
            )
        )
        return {question_id: text for question_id, text in rows}


async def test_answers_must_be_one_of_the_options(client: httpx.AsyncClient, app: FastAPI) -> None:
    test, questions = await create_test(app, questions=3)
    async with app.state.resources.database.sessionmaker() as session:
        # A free-text question: no options, any text is an answer.
        await session.execute(
            update(Question).where(Question.id == questions[2].id).values(options=[])
        )
        await session.commit()
    token = await candidate_token(client)
    attempt_id = (await start_attempt(client, token, test.id)).json()["attempt_id"]

    for text in ("D", "b", "A B", "B."):
        refused = await answer_question(client, token, attempt_id, questions[0].id, text)
        assert refused.status_code == 422, text
        assert refused.json()["error"] == {
            "code": "invalid_option",
            "message": "Each answer must be one of the question's options.",
            "question_ids": [questions[0].id],
        }
    bulk = await submit_answers(
        client,
        token,
        attempt_id,
        [(questions[0].id, "A"), (questions[1].id, "Z"), (questions[2].id, "my own words")],
    )
    assert bulk.status_code == 422
    assert bulk.json()["error"]["question_ids"] == [questions[1].id]
    assert await _stored_answers(app, attempt_id) == {}  # all or nothing

    for question_id, text in ((questions[0].id, " C "), (questions[2].id, "free")):
        saved = await answer_question(client, token, attempt_id, question_id, text)
        assert saved.status_code == 200, text
    assert await _stored_answers(app, attempt_id) == {questions[0].id: "C", questions[2].id: "free"}


async def test_candidates_never_learn_which_answers_were_right(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    test, questions = await create_test(app, questions=2)
    token = await candidate_token(client)
    started = await start_attempt(client, token, test.id)
    attempt_id = started.json()["attempt_id"]
    for question in started.json()["questions"]:
        assert set(question) == {"id", "position", "text", "options", "points"}

    right = await answer_question(client, token, attempt_id, questions[0].id, "B")
    wrong = await answer_question(client, token, attempt_id, questions[1].id, "A")
    for response, question in ((right, questions[0]), (wrong, questions[1])):
        assert response.status_code == 200
        body = response.json()
        assert set(body) == {"attempt_id", "question_id", "answered_at"}
        assert (body["attempt_id"], body["question_id"]) == (attempt_id, question.id)
    submitted = await submit_answers(client, token, attempt_id, [(questions[1].id, "C")])
    assert submitted.json() == {"attempt_id": attempt_id, "saved": 1}

    result = await complete_attempt(client, token, attempt_id)
    assert set(result.json()) == {
        "attempt_id",
        "test_id",
        "status",
        "score",
        "max_score",
        "completed_at",
    }
    assert (result.json()["score"], result.json()["max_score"]) == (1.0, 3.0)
    notes = (await client.get("/api/notifications", headers=auth(token))).json()
    assert [note["body"] for note in notes["items"]] == ["You scored 1 of 3 on Python basics."]
    listed = await _available(client, token, test.id)
    assert not {"score", "correct_answer", "answers"} & set(listed)

    # Admins keep the full result.
    admin = auth(await admin_token(app, client))
    results = (await client.get("/api/admin/results", headers=admin)).json()["items"]
    assert [(r["attempt_id"], r["score"], r["max_score"]) for r in results] == [
        (attempt_id, 1.0, 3.0)
    ]


async def test_policy_on_embedded_sqlite(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    assert settings.sqlalchemy_url.startswith("sqlite")
    await asyncio.to_thread(migrate, settings)
    app = create_app(settings)
    async with app.router.lifespan_context(app), client_for(app) as client:
        test, _ = await create_test(app, questions=1)
        await _set_policy(app, test.id, max_attempts=3, cooldown=0)
        token = await candidate_token(client)
        refusals = await _race_retakes(client, token, test.id, takers=4)
        assert await _attempts_of(app, test.id) == ["completed"] * 3
        assert refusals == ["attempt_limit_reached"] * 4

        await _set_policy(app, test.id, max_attempts=5, cooldown=60)
        refused = await start_attempt(client, token, test.id)
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "retake_cooldown"
        assert 0 < int(refused.headers["Retry-After"]) <= 3600
        listed = await _available(client, token, test.id)
        assert (listed["attempts_used"], listed["attempts_remaining"]) == (3, 2)
        assert listed["next_attempt_at"] is not None and not listed["can_start"]
