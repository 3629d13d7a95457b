"""Admin views, notifications and role checks."""

import httpx
import pytest
from fastapi import FastAPI

from tests.support.factories import (
    admin_token,
    auth,
    candidate_token,
    create_test,
    register_candidate,
)


async def _candidate_with_profile(
    client: httpx.AsyncClient, email: str, summary: str, skills: list[str]
) -> str:
    token: str = (await register_candidate(client, email=email, full_name=email.split("@")[0]))[
        "access_token"
    ]
    response = await client.patch(
        "/api/profile", headers=auth(token), json={"summary": summary, "skills": skills}
    )
    assert response.status_code == 200
    return token


async def test_every_admin_route_refuses_candidates_and_anonymous(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    token = await candidate_token(client)
    admin_routes = [
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        if path.startswith("/api/admin")
        for method in operations
    ]
    assert len(admin_routes) >= 9
    for method, path in admin_routes:
        url = path.replace("{job_id}", "1")
        assert (await client.request(method, url, headers=auth(token))).status_code == 403, (
            method,
            path,
        )
        assert (await client.request(method, url)).status_code == 401, (method, path)


async def test_dashboard_candidates_and_results(client: httpx.AsyncClient, app: FastAPI) -> None:
    test, questions = await create_test(app, questions=2)
    alice = await _candidate_with_profile(
        client, "alice@example.com", "Python developer who loves Python", ["python", "django"]
    )
    await _candidate_with_profile(client, "bob@example.com", "Java developer", ["java", "spring"])
    attempt = (
        await client.post("/api/tests/start", headers=auth(alice), json={"test_id": test.id})
    ).json()
    await client.post(
        f"/api/tests/{attempt['attempt_id']}/answer",
        headers=auth(alice),
        json={"question_id": questions[1].id, "answer_text": "B"},
    )
    await client.post(
        "/api/tests/complete", headers=auth(alice), json={"attempt_id": attempt["attempt_id"]}
    )
    token = await admin_token(app, client)

    dashboard = (await client.get("/api/admin/dashboard", headers=auth(token))).json()
    assert dashboard == {
        "candidates": 2,
        "active_jobs": 0,
        "active_tests": 1,
        "attempts_in_progress": 0,
        "attempts_completed": 1,
        "average_score_percent": 66.67,
        "resumes_parsed": 0,
    }
    candidates = (await client.get("/api/admin/candidates", headers=auth(token))).json()
    assert [c["email"] for c in candidates["items"]] == ["bob@example.com", "alice@example.com"]
    results = (await client.get("/api/admin/results", headers=auth(token))).json()
    assert len(results["items"]) == 1
    row = results["items"][0]
    assert (
        row["candidate_email"] == "alice@example.com"
        and row["score"] == 2.0
        and row["score_percent"] == 66.67
    )
    assert (
        await client.get(
            "/api/admin/results", headers=auth(token), params={"test_id": test.id + 99}
        )
    ).json()["items"] == []


async def test_candidate_search_ranks_by_skills_then_summary(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await _candidate_with_profile(
        client, "py@example.com", "Backend developer", ["python", "fastapi"]
    )
    await _candidate_with_profile(client, "mention@example.com", "Knows some python", ["excel"])
    await _candidate_with_profile(client, "none@example.com", "Designer", ["figma"])
    token = await admin_token(app, client)
    found = (
        await client.get(
            "/api/admin/candidates/search", headers=auth(token), params={"q": "python developer"}
        )
    ).json()
    assert [item["email"] for item in found["items"]] == ["py@example.com", "mention@example.com"]
    assert found["items"][0]["score"] > found["items"][1]["score"]
    again = (
        await client.get(
            "/api/admin/candidates/search", headers=auth(token), params={"q": "python developer"}
        )
    ).json()
    assert again == found
    assert (
        await client.get("/api/admin/candidates/search", headers=auth(token), params={"q": "!!"})
    ).json()["items"] == []
    assert (
        await client.get("/api/admin/candidates/search", headers=auth(token))
    ).status_code == 422


async def test_ai_generate_creates_a_takeable_test(client: httpx.AsyncClient, app: FastAPI) -> None:
    token = await admin_token(app, client)
    generated = await client.post(
        "/api/admin/ai-generate",
        headers=auth(token),
        json={
            "topic": "PostgreSQL indexing",
            "count": 3,
            "difficulty": "hard",
            "create_test": True,
            "title": "PG",
        },
    )
    assert generated.status_code == 200, generated.text
    body = generated.json()
    assert len(body["questions"]) == 3 and body["test_id"] is not None
    assert all(q["correct_answer"] in q["options"] for q in body["questions"])
    same = (
        await client.post(
            "/api/admin/ai-generate",
            headers=auth(token),
            json={"topic": "PostgreSQL indexing", "count": 3, "difficulty": "hard"},
        )
    ).json()
    assert same["questions"] == body["questions"] and same["test_id"] is None
    candidate = await candidate_token(client)
    available = (await client.get("/api/tests/available", headers=auth(candidate))).json()
    assert [(t["id"], t["question_count"]) for t in available] == [(body["test_id"], 3)]
    missing_title = await client.post(
        "/api/admin/ai-generate", headers=auth(token), json={"topic": "x y", "create_test": True}
    )
    assert missing_title.status_code == 422


async def test_notifications_mark_read_is_private(client: httpx.AsyncClient, app: FastAPI) -> None:
    test, _ = await create_test(app)
    owner, other = await candidate_token(client), await candidate_token(client)
    attempt = (
        await client.post("/api/tests/start", headers=auth(owner), json={"test_id": test.id})
    ).json()
    await client.post(
        "/api/tests/complete", headers=auth(owner), json={"attempt_id": attempt["attempt_id"]}
    )
    note = (await client.get("/api/notifications", headers=auth(owner))).json()["items"][0]
    assert (
        await client.post(f"/api/notifications/{note['id']}/read", headers=auth(other))
    ).status_code == 404
    read = await client.post(f"/api/notifications/{note['id']}/read", headers=auth(owner))
    assert read.status_code == 200 and read.json()["read_at"] is not None
    again = await client.post(f"/api/notifications/{note['id']}/read", headers=auth(owner))
    assert again.json()["read_at"] == read.json()["read_at"]
    listing = (
        await client.get("/api/notifications", headers=auth(owner), params={"unread_only": True})
    ).json()
    assert listing == {"items": [], "unread": 0}


@pytest.mark.parametrize("path", ["/api/nope", "/api/jobs/not-a-number"])
async def test_unknown_routes_use_the_error_shape(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code in {404, 422}
    assert set(response.json()["error"]) >= {"code", "message"}
