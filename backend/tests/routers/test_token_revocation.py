"""A token is only as good as the account behind it: deactivation, role changes and password
resets end the tokens issued before, on every process; tokens with absurd claims are 401."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import redis
from fastapi import FastAPI

from app.models import User
from app.security import create_password_reset_token
from tests.conftest import TEST_JWT_SECRET
from tests.support.apps import AppFactory, client_for
from tests.support.factories import PASSWORD, admin_token, auth, create_admin, register_candidate
from tests.support.redis_server import RedisServer
from tests.support.tcp_proxy import TcpProxy
from tests.support.uvicorn_processes import UvicornProcesses
from tests.support.wait import wait_until

# The longest a process may trust its own copy of an account's state (the default setting).
LOCAL_TTL_SECONDS = 2.0


def _server_env(tmp_path: Path, database_url: str, redis_url: str) -> dict[str, str]:
    return {
        "ENVIRONMENT": "development",
        "JWT_SECRET": TEST_JWT_SECRET,
        "DATA_DIR": str(tmp_path / "server-data"),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "RATE_LIMIT_ENABLED": "false",
        "CACHE_ENABLED": "false",
        "PASSWORD_HASH_TIME_COST": "1",
        "PASSWORD_HASH_MEMORY_KIB": "1024",
        # A stall of a loaded machine must not send a process to its Redis-down path: these
        # tests are about what goes through Redis (the fallback has its own test below).
        "REDIS_SOCKET_TIMEOUT_SECONDS": "10",
        "REDIS_CONNECT_TIMEOUT_SECONDS": "10",
    }


@pytest.fixture
def servers(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[list[str]]:
    """Two uvicorn processes on one database and one Redis."""
    with UvicornProcesses("app.main:app", 2, _server_env(tmp_path, database_url, redis_url)) as s:
        yield s.urls


async def _status(http: httpx.AsyncClient, url: str, token: str, path: str) -> int:
    return (await http.get(f"{url}{path}", headers=auth(token))).status_code


async def _refused_everywhere(
    http: httpx.AsyncClient, urls: list[str], token: str, path: str = "/api/profile"
) -> None:
    """Wait until every process answers 401 invalid_token to `token` (and never a 5xx)."""

    async def refused() -> bool:
        answers = [await http.get(f"{url}{path}", headers=auth(token)) for url in urls]
        assert all(answer.status_code < 500 for answer in answers)
        return all(
            answer.status_code == 401 and answer.json()["error"]["code"] == "invalid_token"
            for answer in answers
        )

    await wait_until(refused, within=LOCAL_TTL_SECONDS + 1, what="the old token to be refused")


async def _login(http: httpx.AsyncClient, url: str, email: str, password: str = PASSWORD) -> Any:
    return await http.post(f"{url}/api/auth/login", json={"email": email, "password": password})


@pytest.mark.slow
async def test_deactivation_and_reactivation_reach_every_process(
    app: FastAPI, client: httpx.AsyncClient, servers: list[str], redis_url: str
) -> None:
    admin = auth(await admin_token(app, client))
    body = await register_candidate(client, email="leaver@example.com")
    user_id, token = body["user"]["id"], body["access_token"]
    async with httpx.AsyncClient(timeout=30) as http:
        # Both processes hold the account's state before the change.
        for url in servers:
            assert await _status(http, url, token, "/api/profile") == 200
        store = redis.Redis.from_url(redis_url)
        assert store.get(f"hpc:tv:{user_id}") == b"0:1:candidate"

        first, second = servers
        changed = await http.patch(
            f"{first}/api/admin/users/{user_id}", headers=admin, json={"is_active": False}
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["is_active"] is False
        await _refused_everywhere(http, servers, token)
        assert store.get(f"hpc:tv:{user_id}") == b"1:0:candidate"
        refused = await _login(http, second, "leaver@example.com")
        assert refused.status_code == 401

        reactivated = await http.patch(
            f"{second}/api/admin/users/{user_id}", headers=admin, json={"is_active": True}
        )
        assert reactivated.status_code == 200
        login = await _login(http, first, "leaver@example.com")
        assert login.status_code == 200
        # A token newer than a process's copy makes it read the database: no wait.
        for url in servers:
            assert await _status(http, url, login.json()["access_token"], "/api/profile") == 200
        # The token from before the deactivation stays dead.
        for url in servers:
            assert await _status(http, url, token, "/api/profile") == 401
        store.close()


@pytest.mark.slow
async def test_role_changes_reach_every_process(
    app: FastAPI, client: httpx.AsyncClient, servers: list[str]
) -> None:
    admin = auth(await admin_token(app, client))
    other = await create_admin(app, "other.admin@example.com")
    other_token = (
        await client.post(
            "/api/auth/admin/login", json={"email": other.email, "password": PASSWORD}
        )
    ).json()["access_token"]
    candidate = await register_candidate(client, email="rising@example.com")
    async with httpx.AsyncClient(timeout=30) as http:
        first, second = servers
        for url in servers:
            assert await _status(http, url, other_token, "/api/admin/dashboard") == 200
            assert await _status(http, url, candidate["access_token"], "/api/profile") == 200

        # A demoted admin's token cannot reach admin routes on any process.
        demoted = await http.patch(
            f"{second}/api/admin/users/{other.id}", headers=admin, json={"role": "candidate"}
        )
        assert demoted.status_code == 200 and demoted.json()["role"] == "candidate"
        await _refused_everywhere(http, servers, other_token, "/api/admin/dashboard")
        relogin = await _login(http, first, other.email)
        assert relogin.json()["user"]["role"] == "candidate"
        for url in servers:
            answer = await http.get(
                f"{url}/api/admin/dashboard", headers=auth(relogin.json()["access_token"])
            )
            assert answer.status_code == 403

        # A promoted candidate's old token is refused; a new login is an admin's.
        promoted = await http.patch(
            f"{first}/api/admin/users/{candidate['user']['id']}",
            headers=admin,
            json={"role": "admin"},
        )
        assert promoted.status_code == 200
        await _refused_everywhere(http, servers, candidate["access_token"])
        admin_login = await http.post(
            f"{second}/api/auth/admin/login",
            json={"email": "rising@example.com", "password": PASSWORD},
        )
        assert admin_login.status_code == 200
        new_token = admin_login.json()["access_token"]
        for url in servers:
            assert await _status(http, url, new_token, "/api/admin/dashboard") == 200


@pytest.mark.slow
async def test_a_password_reset_ends_the_old_tokens_on_every_process(
    app: FastAPI, client: httpx.AsyncClient, servers: list[str]
) -> None:
    body = await register_candidate(client, email="forgetful@example.com")
    token = body["access_token"]
    async with app.state.resources.database.sessionmaker() as session:
        user = await session.get(User, body["user"]["id"])
        assert user is not None
        reset_token = create_password_reset_token(app.state.settings, user.id, user.password_hash)
    async with httpx.AsyncClient(timeout=30) as http:
        first, second = servers
        for url in servers:
            assert await _status(http, url, token, "/api/profile") == 200
        reset = await http.post(
            f"{second}/api/auth/reset-password",
            json={"token": reset_token, "new_password": "Fresh start 2026"},
        )
        assert reset.status_code == 200, reset.text
        await _refused_everywhere(http, servers, token)
        login = await _login(http, first, "forgetful@example.com", "Fresh start 2026")
        assert login.status_code == 200
        for url in servers:
            assert await _status(http, url, login.json()["access_token"], "/api/profile") == 200


async def test_without_redis_changes_reach_other_processes_through_the_database(
    app_with: AppFactory, stopped_redis: RedisServer
) -> None:
    # Two apps are two processes' worth of state; their Redis refuses every connection.
    async with (
        app_with(redis_url=stopped_redis.url, redis_connect_timeout_seconds=0.2) as one,
        app_with(redis_url=stopped_redis.url, redis_connect_timeout_seconds=0.2) as two,
        client_for(one) as first,
        client_for(two) as second,
    ):
        admin = auth(await admin_token(one, first))
        body = await register_candidate(first, email="offline@example.com")
        token = body["access_token"]
        assert (await second.get("/api/profile", headers=auth(token))).status_code == 200
        changed = await first.patch(
            f"/api/admin/users/{body['user']['id']}", headers=admin, json={"is_active": False}
        )
        assert changed.status_code == 200

        async def refused() -> bool:
            answer = await second.get("/api/profile", headers=auth(token))
            assert answer.status_code in (200, 401)
            return answer.status_code == 401

        await wait_until(refused, within=LOCAL_TTL_SECONDS + 1, what="the other app to refuse")
        # The app that made the change refuses it at once.
        assert (await first.get("/api/profile", headers=auth(token))).status_code == 401


async def test_a_change_redis_missed_is_sent_again_once_redis_answers(
    app_with: AppFactory, redis_server: RedisServer, redis_url: str
) -> None:
    # The changing app reaches Redis through a path that fails while the other app's does not:
    # Redis keeps the old state, which the other app would read for the key's TTL (60 s).
    path = TcpProxy(target_port=redis_server.port)
    path.up()
    timeouts: dict[str, Any] = {
        "redis_socket_timeout_seconds": 5,
        "redis_connect_timeout_seconds": 5,
        "redis_backoff_seconds": 0.1,
        "redis_backoff_max_seconds": 0.2,
    }
    try:
        async with (
            app_with(redis_url=f"redis://127.0.0.1:{path.port}/0", **timeouts) as changer,
            app_with(redis_url=redis_url, **timeouts) as other,
            client_for(changer) as first,
            client_for(other) as second,
        ):
            admin = auth(await admin_token(changer, first))
            body = await register_candidate(first, email="partitioned@example.com")
            token = body["access_token"]
            assert (await second.get("/api/profile", headers=auth(token))).status_code == 200
            store = redis.Redis.from_url(redis_url)
            key = f"hpc:tv:{body['user']['id']}"
            assert store.get(key) == b"0:1:candidate"

            path.down()
            changed = await first.patch(
                f"/api/admin/users/{body['user']['id']}", headers=admin, json={"is_active": False}
            )
            assert changed.status_code == 200
            assert (await first.get("/api/profile", headers=auth(token))).status_code == 401
            assert store.get(key) == b"0:1:candidate"
            path.up()

            async def resent() -> bool:
                # The changer's next Redis read (its admin's copy expires) sends the change first.
                assert (await first.get("/api/admin/dashboard", headers=admin)).status_code == 200
                return (await second.get("/api/profile", headers=auth(token))).status_code == 401

            await wait_until(resent, within=LOCAL_TTL_SECONDS * 2 + 1, what="the change resent")
            assert store.get(key) == b"1:0:candidate"
            store.close()
    finally:
        path.down()


async def test_admin_user_changes_are_checked(app: FastAPI, client: httpx.AsyncClient) -> None:
    admin_headers = auth(await admin_token(app, client))
    me = jwt.decode(admin_headers["Authorization"][7:], options={"verify_signature": False})
    candidate = await register_candidate(client)
    path = f"/api/admin/users/{candidate['user']['id']}"

    as_candidate = await client.patch(
        path, headers=auth(candidate["access_token"]), json={"is_active": False}
    )
    assert as_candidate.status_code == 403
    for field, value in (("is_active", False), ("role", "candidate")):
        own = await client.patch(
            f"/api/admin/users/{me['sub']}", headers=admin_headers, json={field: value}
        )
        assert own.status_code == 403, field
    missing = await client.patch(
        "/api/admin/users/999999", headers=admin_headers, json={"is_active": False}
    )
    assert missing.status_code == 404
    for bad_id in ("0", "-1", str(2**63)):
        answer = await client.patch(
            f"/api/admin/users/{bad_id}", headers=admin_headers, json={"is_active": False}
        )
        assert answer.status_code == 422, bad_id
    for body in ({"role": "owner"}, {"is_active": None}, {"email": "x@example.com"}):
        assert (await client.patch(path, headers=admin_headers, json=body)).status_code == 422
    # A change to the state the account already has is no change: its tokens keep working.
    same = await client.patch(path, headers=admin_headers, json={"is_active": True})
    assert same.status_code == 200
    profile = await client.get("/api/profile", headers=auth(candidate["access_token"]))
    assert profile.status_code == 200


def _signed(**claims: Any) -> str:
    now = datetime.now(UTC)
    values = {
        "role": "candidate",
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=5)).timestamp()),
        **claims,
    }
    return jwt.encode(values, TEST_JWT_SECRET, algorithm="HS256")


ABSURD_SUBS = [
    "99999999999999999999999",
    str(2**63),
    "١٢٣",  # Arabic-Indic digits: str.isdigit() and int() accept them
    "²",
    "-1",
    "0",
    "007",
    " 1",
    "1\x00",
    "",
    "1e3",
]


@pytest.mark.parametrize("sub", ABSURD_SUBS)
async def test_a_signed_token_with_an_absurd_sub_is_401(
    client: httpx.AsyncClient, sub: str
) -> None:
    for path in ("/api/profile", "/api/admin/dashboard", "/api/notifications"):
        response = await client.get(path, headers=auth(_signed(sub=sub)))
        assert response.status_code == 401, (sub, path)
        assert response.json()["error"]["code"] == "invalid_token"


async def test_tokens_with_unusable_versions_or_for_unknown_accounts_are_401(
    client: httpx.AsyncClient,
) -> None:
    body = await register_candidate(client)
    sub = str(body["user"]["id"])
    tokens = [
        _signed(sub=sub, ver=True),
        _signed(sub=sub, ver="0"),
        _signed(sub=sub, ver=-1),
        _signed(sub=sub, ver=2**31),
        _signed(sub=sub, ver=7),  # a version the account never had
        _signed(sub=sub, role="admin"),  # a role the account does not have
        _signed(sub=str(2**63 - 1)),  # no such account
        _signed(sub=sub, role="root"),
    ]
    for token in tokens:
        response = await client.get("/api/profile", headers=auth(token))
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_token"
    # A token without the claim is version 0 (tokens issued before versions existed).
    assert (await client.get("/api/profile", headers=auth(_signed(sub=sub)))).status_code == 200
