"""A candidate taking a test through the API: start, answer, submit, complete. Each returns the
raw response, so tests check refusals as well as successes."""

import httpx

from tests.support.factories import auth


async def start_attempt(client: httpx.AsyncClient, token: str, test_id: int) -> httpx.Response:
    """Start (or resume) the candidate's attempt at a test."""
    return await client.post("/api/tests/start", headers=auth(token), json={"test_id": test_id})


async def answer_question(
    client: httpx.AsyncClient, token: str, attempt_id: int, question_id: int, text: str
) -> httpx.Response:
    """Save one answer."""
    return await client.post(
        f"/api/tests/{attempt_id}/answer",
        headers=auth(token),
        json={"question_id": question_id, "answer_text": text},
    )


async def submit_answers(
    client: httpx.AsyncClient, token: str, attempt_id: int, answers: list[tuple[int, str]]
) -> httpx.Response:
    """Save several answers at once, as (question id, text) pairs in request order."""
    return await client.post(
        "/api/tests/submit",
        headers=auth(token),
        json={
            "attempt_id": attempt_id,
            "answers": [
                {"question_id": question_id, "answer_text": text} for question_id, text in answers
            ],
        },
    )


async def complete_attempt(
    client: httpx.AsyncClient, token: str, attempt_id: int
) -> httpx.Response:
    """Complete (score) the attempt."""
    return await client.post(
        "/api/tests/complete", headers=auth(token), json={"attempt_id": attempt_id}
    )
