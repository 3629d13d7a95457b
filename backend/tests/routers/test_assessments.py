"""Taking a timed test: start, answer, submit, complete."""

import asyncio
from datetime import timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select, update

from app.models import Assessment, Attempt, Notification
from app.models.base import utcnow
from tests.support.attempts import (
    answer_question,
    complete_attempt,
    start_attempt,
    submit_answers,
)
from tests.support.factories import admin_token, auth, candidate_token, create_test


async def _start(client: httpx.AsyncClient, token: str, test_id: int) -> dict[str, Any]:
    response = await start_attempt(client, token, test_id)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_available_lists_active_tests_with_counts(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    test, _ = await create_test(app, questions=4)
    await create_test(app, active=False)
    token = await candidate_token(client)
    available = (await client.get("/api/tests/available", headers=auth(token))).json()
    assert available == [
        {
            "id": test.id,
            "title": "Python basics",
            "description": "Warm-up",
            "duration_minutes": 30,
            "question_count": 4,
            "max_attempts": 1,
            "retake_cooldown_minutes": 24 * 60,
            "attempts_used": 0,
            "attempts_remaining": 1,
            "attempt_in_progress": False,
            "can_start": True,
            "next_attempt_at": None,
        }
    ]
    assert (await client.get("/api/tests/available")).status_code == 401


async def test_full_attempt_scores_correct_answers(client: httpx.AsyncClient, app: FastAPI) -> None:
    test, questions = await create_test(app, questions=3)
    token = await candidate_token(client)
    attempt = await _start(client, token, test.id)
    assert attempt["status"] == "in_progress"
    assert [q["id"] for q in attempt["questions"]] == [q.id for q in questions]
    assert all("correct_answer" not in q for q in attempt["questions"])

    # q1 wrong, then replaced by the right one (idempotent upsert); q2 right, surrounding
    # whitespace stripped.
    attempt_id = attempt["attempt_id"]
    for question_id, text in (
        (questions[0].id, "A"),
        (questions[0].id, "B"),
        (questions[1].id, "  B "),
    ):
        answered = await answer_question(client, token, attempt_id, question_id, text)
        assert answered.status_code == 200, answered.text
    submitted = await submit_answers(client, token, attempt_id, [(questions[2].id, "C")])
    assert submitted.json() == {"attempt_id": attempt_id, "saved": 1}

    result = await complete_attempt(client, token, attempt_id)
    assert result.status_code == 200
    body = result.json()
    assert body["status"] == "completed" and body["score"] == 3.0 and body["max_score"] == 6.0

    late = await answer_question(client, token, attempt_id, questions[2].id, "B")
    assert late.status_code == 409 and late.json()["error"]["code"] == "attempt_completed"
    again = await complete_attempt(client, token, attempt_id)
    assert again.json() == body

    notes = (await client.get("/api/notifications", headers=auth(token))).json()
    assert notes["unread"] == 1 and notes["items"][0]["kind"] == "test_completed"


async def test_start_resumes_the_open_attempt(client: httpx.AsyncClient, app: FastAPI) -> None:
    test, _ = await create_test(app)
    token = await candidate_token(client)
    attempts = await asyncio.gather(*(_start(client, token, test.id) for _ in range(10)))
    assert len({attempt["attempt_id"] for attempt in attempts}) == 1


async def test_expired_attempt_rejects_answers_and_restarts(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    test, questions = await create_test(app)
    async with app.state.resources.database.sessionmaker() as session:
        # A retake on purpose: a lenient policy for this test.
        await session.execute(
            update(Assessment)
            .where(Assessment.id == test.id)
            .values(max_attempts=2, retake_cooldown_minutes=0)
        )
        await session.commit()
    token = await candidate_token(client)
    attempt = await _start(client, token, test.id)
    async with app.state.resources.database.sessionmaker() as session:
        await session.execute(
            update(Attempt)
            .where(Attempt.id == attempt["attempt_id"])
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        await session.commit()
    late = await answer_question(client, token, attempt["attempt_id"], questions[0].id, "B")
    assert late.status_code == 409 and late.json()["error"]["code"] == "attempt_expired"
    fresh = await _start(client, token, test.id)
    assert fresh["attempt_id"] != attempt["attempt_id"]
    abandoned = await complete_attempt(client, token, attempt["attempt_id"])
    assert abandoned.status_code == 409 and abandoned.json()["error"]["code"] == "attempt_abandoned"


async def test_submit_is_all_or_nothing(client: httpx.AsyncClient, app: FastAPI) -> None:
    test, questions = await create_test(app)
    _, other_questions = await create_test(app)
    token = await candidate_token(client)
    attempt = await _start(client, token, test.id)
    bad = await submit_answers(
        client,
        token,
        attempt["attempt_id"],
        [(questions[0].id, "B"), (other_questions[0].id, "B")],
    )
    assert bad.status_code == 422
    assert bad.json()["error"] == {
        "code": "unknown_question",
        "message": "Some questions do not belong to this test.",
        "question_ids": [other_questions[0].id],
    }
    duplicate = await submit_answers(
        client, token, attempt["attempt_id"], [(questions[0].id, "B"), (questions[0].id, "C")]
    )
    assert duplicate.status_code == 422
    result = (await complete_attempt(client, token, attempt["attempt_id"])).json()
    assert result["score"] == 0.0  # nothing from the rejected requests was saved


async def test_attempts_are_private(client: httpx.AsyncClient, app: FastAPI) -> None:
    test, questions = await create_test(app)
    owner, intruder = await candidate_token(client), await candidate_token(client)
    attempt = await _start(client, owner, test.id)
    for path, payload in (
        (
            f"/api/tests/{attempt['attempt_id']}/answer",
            {"question_id": questions[0].id, "answer_text": "B"},
        ),
        ("/api/tests/complete", {"attempt_id": attempt["attempt_id"]}),
        (
            "/api/tests/submit",
            {
                "attempt_id": attempt["attempt_id"],
                "answers": [{"question_id": questions[0].id, "answer_text": "B"}],
            },
        ),
    ):
        response = await client.post(path, headers=auth(intruder), json=payload)
        assert response.status_code == 404, path
    assert (await start_attempt(client, owner, 987654)).status_code == 404
    admin = await admin_token(app, client)
    assert (await start_attempt(client, admin, test.id)).status_code == 403


async def test_concurrent_completes_score_exactly_once(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    test, questions = await create_test(app)
    token = await candidate_token(client)
    attempt = await _start(client, token, test.id)
    await answer_question(client, token, attempt["attempt_id"], questions[1].id, "B")
    responses = await asyncio.gather(
        *(complete_attempt(client, token, attempt["attempt_id"]) for _ in range(20))
    )
    assert {response.status_code for response in responses} == {200}
    assert len({response.text for response in responses}) == 1
    assert responses[0].json()["score"] == 2.0
    async with app.state.resources.database.sessionmaker() as session:
        notifications = await session.scalar(select(func.count()).select_from(Notification))
    assert notifications == 1
