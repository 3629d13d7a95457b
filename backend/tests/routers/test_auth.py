"""Registration, login, admin login and password reset."""

import asyncio

import httpx
import jwt
from fastapi import FastAPI
from sqlalchemy import func, select

from app.models import EmailOutbox, User
from app.security import create_password_reset_token
from tests.support.factories import PASSWORD, auth, create_admin, register_candidate
from tests.support.wait import wait_until


async def test_register_returns_token_for_new_candidate(client: httpx.AsyncClient) -> None:
    body = await register_candidate(client, email="New.Person@Example.com", full_name="New Person")
    assert body["token_type"] == "bearer"
    assert body["user"]["email"] == "new.person@example.com"
    assert body["user"]["role"] == "candidate"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == str(body["user"]["id"]) and claims["role"] == "candidate"
    assert claims["exp"] > claims["iat"]
    profile = await client.get("/api/profile", headers=auth(body["access_token"]))
    assert profile.status_code == 200
    assert profile.json()["full_name"] == "New Person"


async def test_register_duplicate_email_is_409_case_insensitive(client: httpx.AsyncClient) -> None:
    await register_candidate(client, email="dup@example.com")
    response = await client.post(
        "/api/auth/register",
        json={"email": "DUP@example.com", "password": PASSWORD, "full_name": "X"},
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "email_taken"


async def test_register_validation_error_shape(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/auth/register", json={"email": "not-an-email"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    fields = {tuple(detail["loc"]) for detail in error["details"]}
    assert (
        ("body", "email") in fields
        and ("body", "password") in fields
        and ("body", "full_name") in fields
    )
    assert "input" not in str(error["details"])


async def test_concurrent_registrations_of_one_email_create_one_user(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    payload = {"email": "race@example.com", "password": PASSWORD, "full_name": "Racer"}
    responses = await asyncio.gather(
        *(client.post("/api/auth/register", json=payload) for _ in range(20))
    )
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [201] + [409] * 19
    async with app.state.resources.database.sessionmaker() as session:
        count = await session.scalar(
            select(func.count()).select_from(User).where(User.email == "race@example.com")
        )
    assert count == 1


async def test_login_and_wrong_password(client: httpx.AsyncClient) -> None:
    await register_candidate(client, email="login@example.com")
    ok = await client.post(
        "/api/auth/login", json={"email": "LOGIN@example.com", "password": PASSWORD}
    )
    assert ok.status_code == 200 and ok.json()["user"]["email"] == "login@example.com"
    wrong = await client.post(
        "/api/auth/login", json={"email": "login@example.com", "password": "nope-nope"}
    )
    unknown = await client.post(
        "/api/auth/login", json={"email": "ghost@example.com", "password": PASSWORD}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert wrong.json()["error"]["code"] == "invalid_credentials"


async def test_admin_login_only_for_admins(client: httpx.AsyncClient, app: FastAPI) -> None:
    await register_candidate(client, email="cand@example.com")
    refused = await client.post(
        "/api/auth/admin/login", json={"email": "cand@example.com", "password": PASSWORD}
    )
    assert refused.status_code == 403
    await create_admin(app, "boss@example.com")
    accepted = await client.post(
        "/api/auth/admin/login", json={"email": "boss@example.com", "password": PASSWORD}
    )
    assert accepted.status_code == 200
    assert accepted.json()["user"]["role"] == "admin"


async def test_forgot_password_never_reveals_accounts(client: httpx.AsyncClient) -> None:
    await register_candidate(client, email="known@example.com")
    known = await client.post("/api/auth/forgot-password", json={"email": "known@example.com"})
    unknown = await client.post("/api/auth/forgot-password", json={"email": "unknown@example.com"})
    assert known.status_code == unknown.status_code == 202
    assert known.json() == unknown.json()


async def test_forgot_password_emails_a_working_link_to_the_account_only(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await register_candidate(client, email="known@example.com")
    for address in ("Known@Example.com", "unknown@example.com"):
        response = await client.post("/api/auth/forgot-password", json={"email": address})
        assert response.status_code == 202

    async def outbox() -> list[EmailOutbox]:
        async with app.state.resources.database.sessionmaker() as session:
            return list(await session.scalars(select(EmailOutbox)))

    # The local job queue sends the email in the background of this process.
    [sent] = await wait_until(outbox, within=10, what="the reset email")
    assert sent.recipient == "known@example.com" and sent.kind == "password_reset"
    assert sent.body is not None
    token = sent.body.split("?token=", 1)[1].split()[0]
    changed = await client.post(
        "/api/auth/reset-password", json={"token": token, "new_password": "BrandNew123!"}
    )
    assert changed.status_code == 200
    assert len(await outbox()) == 1


async def test_reset_password_works_once(client: httpx.AsyncClient, app: FastAPI) -> None:
    body = await register_candidate(client, email="reset@example.com")
    async with app.state.resources.database.sessionmaker() as session:
        user = await session.get(User, body["user"]["id"])
        assert user is not None
        token = create_password_reset_token(app.state.settings, user.id, user.password_hash)
    changed = await client.post(
        "/api/auth/reset-password", json={"token": token, "new_password": "BrandNew123!"}
    )
    assert changed.status_code == 200
    login = await client.post(
        "/api/auth/login", json={"email": "reset@example.com", "password": "BrandNew123!"}
    )
    assert login.status_code == 200
    again = await client.post(
        "/api/auth/reset-password", json={"token": token, "new_password": "Another123!"}
    )
    assert again.status_code == 400 and again.json()["error"]["code"] == "invalid_reset_token"
    # An access token is not a reset token.
    misuse = await client.post(
        "/api/auth/reset-password",
        json={"token": body["access_token"], "new_password": "Another123!"},
    )
    assert misuse.status_code == 400


async def test_one_reset_token_sent_twice_at_once_changes_the_password_once(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    # The hash runs outside the row lock, so the token is checked again under it.
    body = await register_candidate(client, email="race@example.com")
    async with app.state.resources.database.sessionmaker() as session:
        user = await session.get(User, body["user"]["id"])
        assert user is not None
        token = create_password_reset_token(app.state.settings, user.id, user.password_hash)
    passwords = ["FirstWinner123!", "SecondWinner123!"]
    answers = await asyncio.gather(
        *(
            client.post("/api/auth/reset-password", json={"token": token, "new_password": new})
            for new in passwords
        )
    )
    assert sorted(answer.status_code for answer in answers) == [200, 400]
    winner = passwords[[answer.status_code for answer in answers].index(200)]
    logins = [
        await client.post(
            "/api/auth/login", json={"email": "race@example.com", "password": candidate}
        )
        for candidate in passwords
    ]
    assert [login.status_code == 200 for login in logins] == [c == winner for c in passwords]


async def test_protected_routes_need_a_valid_token(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/profile")).status_code == 401
    forged = jwt.encode(
        {"sub": "1", "role": "admin", "exp": 4102444800, "iat": 0},
        "wrong-key-" * 5,
        algorithm="HS256",
    )
    response = await client.get("/api/admin/dashboard", headers=auth(forged))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_token"
    assert response.headers["www-authenticate"] == "Bearer"
