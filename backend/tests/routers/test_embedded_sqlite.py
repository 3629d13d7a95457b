"""Smoke test of the embedded default: SQLite, no Redis, no AWS, seeded by the seed command."""

import asyncio
from pathlib import Path

import httpx

from app.main import create_app
from devtools.seed import ADMIN_EMAIL, ADMIN_PASSWORD, CANDIDATE_PASSWORD, seed
from tests.conftest import make_settings
from tests.support.database import migrate
from tests.support.factories import auth


async def test_candidate_journey_on_sqlite(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    assert settings.sqlalchemy_url.startswith("sqlite")
    await asyncio.to_thread(migrate, settings)
    assert await seed(settings, candidates=3, jobs=30) == {
        "admins": 1,
        "candidates": 3,
        "jobs": 30,
        "tests": 3,
    }

    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as client,
    ):
        registered = await client.post(
            "/api/auth/register",
            json={"email": "sqlite@example.com", "password": "Password123!", "full_name": "Lite"},
        )
        assert registered.status_code == 201
        login = await client.post(
            "/api/auth/login", json={"email": "loadtest_2@test.com", "password": CANDIDATE_PASSWORD}
        )
        assert login.status_code == 200
        token = login.json()["access_token"]

        jobs = (
            await client.get("/api/jobs", params={"search": "developer", "page_size": 5})
        ).json()
        assert jobs["items"] and all(
            "developer" in (j["title"] + j["description"]).lower() for j in jobs["items"]
        )

        test = (await client.get("/api/tests/available", headers=auth(token))).json()[0]
        attempt = (
            await client.post("/api/tests/start", headers=auth(token), json={"test_id": test["id"]})
        ).json()
        first = attempt["questions"][0]
        answered = await client.post(
            f"/api/tests/{attempt['attempt_id']}/answer",
            headers=auth(token),
            json={"question_id": first["id"], "answer_text": "def"},
        )
        assert answered.status_code == 200
        results = await asyncio.gather(
            *(
                client.post(
                    "/api/tests/complete",
                    headers=auth(token),
                    json={"attempt_id": attempt["attempt_id"]},
                )
                for _ in range(5)
            )
        )
        assert {r.status_code for r in results} == {200} and len({r.text for r in results}) == 1
        assert results[0].json()["score"] == 1.0 and results[0].json()["max_score"] == 5.0

        admin = await client.post(
            "/api/auth/admin/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
        )
        dashboard = (
            await client.get("/api/admin/dashboard", headers=auth(admin.json()["access_token"]))
        ).json()
        assert (
            dashboard["candidates"] == 4
            and dashboard["attempts_completed"] == 1
            and dashboard["active_jobs"] == 30
        )
