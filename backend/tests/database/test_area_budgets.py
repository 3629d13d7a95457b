"""Per-area connection budgets: a lock on one area's tables parks that area's requests only.

Each test parks test-taking requests on a locked test_attempts table, as a stuck migration or a
long transaction would, and looks at what the rest of the service does meanwhile.
"""

import asyncio
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from app.database import Database
from tests.conftest import make_settings
from tests.support.apps import AppFactory, client_for
from tests.support.database import lock_waiters, tables_locked
from tests.support.factories import auth, candidate_token, create_test
from tests.support.wait import wait_until

APP = "hiring-pro-backend-web"
# Four connections in either run (direct pool or pooler client pool); a request over its area's
# budget gives up after 0.3 s. Only the lock's release ends a parked request: no timeout can
# end it first on a loaded machine.
SMALL_POOL: dict[str, Any] = {
    "db_pool_size": 4,
    "db_pooler_client_pool_size": 4,
    "db_pool_timeout_seconds": 0.3,
    "db_lock_timeout_ms": 60_000,
    "db_statement_timeout_ms": 60_000,
}

Taker = tuple[str, int]


async def _takers(app: FastAPI, client: httpx.AsyncClient, count: int) -> tuple[list[Taker], int]:
    """`count` candidates, each with an open attempt of a one-question test; the question."""
    test, questions = await create_test(app, questions=1)
    takers = []
    for _ in range(count):
        token = await candidate_token(client)
        start = await client.post(
            "/api/tests/start", headers=auth(token), json={"test_id": test.id}
        )
        takers.append((token, start.json()["attempt_id"]))
    return takers, questions[0].id


def _answer(client: httpx.AsyncClient, taker: Taker, question_id: int) -> Any:
    token, attempt_id = taker
    return client.post(
        f"/api/tests/{attempt_id}/answer",
        headers=auth(token),
        json={"question_id": question_id, "answer_text": "B"},
    )


async def _parked(postgres_url: str, count: int) -> bool:
    return len(await lock_waiters(postgres_url, APP)) == count


async def test_a_locked_table_parks_only_its_own_area(
    app_with: AppFactory, postgres_url: str
) -> None:
    async with app_with(**SMALL_POOL) as app, client_for(app) as client:
        takers, question_id = await _takers(app, client, 3)
        assert app.state.resources.database.budgets["assessments"].limit == 2
        async with tables_locked(postgres_url, "test_attempts"):
            parked = [
                asyncio.create_task(_answer(client, taker, question_id)) for taker in takers[:2]
            ]
            await wait_until(
                lambda: _parked(postgres_url, 2), within=10, what="two answers to wait for the lock"
            )
            over_budget = await _answer(client, takers[2], question_id)
            token = takers[2][0]
            notifications = await client.get("/api/notifications", headers=auth(token))
            profile = await client.get("/api/profile", headers=auth(token))
            ready = await client.get("/health/ready")
            served_while_parked = not any(task.done() for task in parked)
        answered = await asyncio.gather(*parked)
    # The area's third request waited for one of its two connections, then gave up.
    assert over_budget.status_code == 503
    assert over_budget.headers["retry-after"] == "1"
    assert over_budget.json()["error"]["code"] == "service_busy"
    # The other areas had the rest of the pool, and the instance stays ready.
    assert served_while_parked
    assert notifications.status_code == 200
    assert profile.status_code == 200
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    # The parked requests finish once the lock is gone.
    assert [response.status_code for response in answered] == [200, 200]


async def test_an_area_allowed_the_whole_pool_starves_the_others(
    app_with: AppFactory, postgres_url: str
) -> None:
    """The control (a share of 1, as before budgets): unrelated routes get no connection, and
    readiness says degraded: the database still answers on a connection of its own."""
    async with (
        app_with(**SMALL_POOL, db_assessments_pool_share=1.0) as app,
        client_for(app) as client,
    ):
        takers, question_id = await _takers(app, client, 5)
        async with tables_locked(postgres_url, "test_attempts"):
            parked = [
                asyncio.create_task(_answer(client, taker, question_id)) for taker in takers[:4]
            ]
            await wait_until(
                lambda: _parked(postgres_url, 4),
                within=10,
                what="four answers to wait for the lock",
            )
            notifications = await client.get("/api/notifications", headers=auth(takers[4][0]))
            ready = await client.get("/health/ready")
        answered = await asyncio.gather(*parked)
    assert notifications.status_code == 503
    assert notifications.json()["error"]["code"] == "service_busy"
    assert ready.status_code == 200
    assert ready.json()["status"] == "degraded"
    assert ready.json()["checks"]["database"]["status"] == "busy"
    assert [response.status_code for response in answered] == [200] * 4


def test_area_limits_are_shares_of_the_pool(tmp_path: Path) -> None:
    url = "postgresql+asyncpg://postgres@127.0.0.1:5432/unused"

    def limits(**overrides: Any) -> dict[str, int | None]:
        database = Database.create(make_settings(tmp_path, database_url=url, **overrides))
        return {area: budget.limit for area, budget in database.budgets.items()}

    direct = limits(use_external_pooler=False, db_pool_size=20)
    pooled = limits(use_external_pooler=True, db_pooler_client_pool_size=10)
    tiny = limits(use_external_pooler=False, db_pool_size=1)
    unpooled = limits(use_external_pooler=True, db_pooler_client_pool_size=0)
    assert direct == {"assessments": 12, "admin": 6, "default": 12}
    assert pooled == {"assessments": 6, "admin": 3, "default": 6}
    # Every area keeps at least one connection.
    assert tiny == {"assessments": 1, "admin": 1, "default": 1}
    # No local pool to share (NullPool): nothing is held back here.
    assert unpooled == {"assessments": None, "admin": None, "default": None}
