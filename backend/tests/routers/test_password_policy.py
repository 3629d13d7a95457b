"""Passwords taken as typed, with a policy for new ones; e-mail addresses normalised so
look-alikes are one account."""

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from app.domain.password_policy import common_passwords
from app.models import EmailOutbox, User
from app.security import create_password_reset_token
from tests.support.factories import PASSWORD, create_admin, register_candidate
from tests.support.wait import wait_until


async def _register(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post(
        "/api/auth/register", json={"email": email, "password": password, "full_name": "Pat"}
    )


async def _login(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post("/api/auth/login", json={"email": email, "password": password})


@pytest.mark.parametrize(
    ("email", "password", "rule"),
    [
        ("pat@example.com", "Short1!", "8 to 128 characters"),
        ("pat@example.com", "", "8 to 128 characters"),
        ("pat@example.com", "x" * 129, "8 to 128 characters"),
        # Length counts characters, not bytes: 7 three-byte characters are too short.
        ("pat@example.com", "密码密码密码密", "8 to 128 characters"),
        ("patricia@example.com", "patricia@example.com", "e-mail"),
        ("patricia@example.com", "PATRICIA@EXAMPLE.COM", "e-mail"),
        ("patricia@example.com", "Patricia", "e-mail"),
        ("patricia@example.com", "my patricia 2026", "e-mail"),
        ("pat@example.com", "password123", "too common"),
        ("pat@example.com", "PassWord123", "too common"),
        ("pat@example.com", "ｐａｓｓｗｏｒｄ１２３", "too common"),  # noqa: RUF001 (full-width)
        ("pat@example.com", "qwertyuiop", "too common"),
    ],
)
async def test_registration_refuses_weak_passwords(
    client: httpx.AsyncClient, email: str, password: str, rule: str
) -> None:
    response = await _register(client, email, password)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "weak_password"
    assert rule in error["message"]
    assert (await _login(client, email, password or "x")).status_code == 401


async def test_acceptable_passwords_register(client: httpx.AsyncClient) -> None:
    # 8 and 128 characters; a 2-letter local part is not looked for inside the password.
    for email, password in (
        ("edge8@example.com", "Kq7#vL2p"),
        ("edge128@example.com", "Zr8!" * 32),
        ("al@example.com", "always bright 9"),
    ):
        response = await _register(client, email, password)
        assert response.status_code == 201, (email, response.text)
    assert len(common_passwords()) > 5000
    assert PASSWORD.casefold() not in common_passwords()


async def test_passwords_are_taken_as_typed(client: httpx.AsyncClient) -> None:
    password = " Spaced out phrase 42 "
    response = await _register(client, "spaces@example.com", password)
    assert response.status_code == 201
    assert (await _login(client, "spaces@example.com", password)).status_code == 200
    for variant in (password.strip(), password.rstrip(), password.lstrip()):
        assert (await _login(client, "spaces@example.com", variant)).status_code == 401
    # Other fields are still stripped.
    assert response.json()["user"]["full_name"] == "Pat"


async def test_reset_applies_the_policy_and_keeps_whitespace(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    body = await register_candidate(client, email="resetter@example.com")
    async with app.state.resources.database.sessionmaker() as session:
        user = await session.get(User, body["user"]["id"])
        assert user is not None
        token = create_password_reset_token(app.state.settings, user.id, user.password_hash)
    for weak, rule in (("short", "8 to 128"), ("resetter2026", "e-mail"), ("iloveyou1", "common")):
        response = await client.post(
            "/api/auth/reset-password", json={"token": token, "new_password": weak}
        )
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "weak_password"
        assert rule in response.json()["error"]["message"]
    # The refused attempts did not use up the token.
    changed = await client.post(
        "/api/auth/reset-password", json={"token": token, "new_password": "new secret words "}
    )
    assert changed.status_code == 200
    assert (await _login(client, "resetter@example.com", "new secret words ")).status_code == 200
    assert (await _login(client, "resetter@example.com", "new secret words")).status_code == 401


async def test_login_does_not_apply_the_policy(client: httpx.AsyncClient, app: FastAPI) -> None:
    # An account whose password predates the policy (common, and short).
    passwords = app.state.resources.passwords
    async with app.state.resources.database.sessionmaker() as session:
        session.add(
            User(
                email="old@example.com",
                password_hash=await passwords.hash("letmein"),
                full_name="Old Timer",
                role="candidate",
            )
        )
        await session.commit()
    assert (await _login(client, "old@example.com", "letmein")).status_code == 200


@pytest.mark.parametrize(
    ("first", "look_alike"),
    [
        ("abc@example.com", "ＡＢＣ@example.com"),  # noqa: RUF001 (full-width letters)
        ("abc@example.com", "ABC@EXAMPLE.COM"),
        ("strasse@example.com", "STRAẞE@example.com"),
        ("straße@example.com", "strasse@example.com"),
        ("ﬁnance@example.com", "finance@example.com"),  # the "fi" ligature
        ("abc@example.com", "  abc@example.com  "),
    ],
)
async def test_look_alike_addresses_are_one_account(
    client: httpx.AsyncClient, app: FastAPI, first: str, look_alike: str
) -> None:
    created = await _register(client, first, PASSWORD)
    assert created.status_code == 201, created.text
    taken = await _register(client, look_alike, PASSWORD)
    assert taken.status_code == 409
    assert taken.json()["error"]["code"] == "email_taken"
    login = await _login(client, look_alike, PASSWORD)
    assert login.status_code == 200
    assert login.json()["user"]["id"] == created.json()["user"]["id"]
    async with app.state.resources.database.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(User)) == 1


async def test_forgot_password_finds_the_account_by_a_look_alike(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await register_candidate(client, email="Müller@example.com")
    response = await client.post("/api/auth/forgot-password", json={"email": "MÜLLER@EXAMPLE.COM"})
    assert response.status_code == 202

    async def outbox() -> list[EmailOutbox]:
        async with app.state.resources.database.sessionmaker() as session:
            return list(await session.scalars(select(EmailOutbox)))

    [sent] = await wait_until(outbox, within=10, what="the reset email")
    assert sent.recipient == "müller@example.com"


async def test_addresses_invalid_once_normalised_are_422(client: httpx.AsyncClient) -> None:
    # A full-width at sign is a letter to email-validator, and "@" after NFKC: two at signs.
    response = await _register(client, "a＠b@example.com", PASSWORD)  # noqa: RUF001
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"


async def test_accounts_stored_before_normalisation_still_log_in(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    # Stored lower-cased, as before: "ß" case-folds to "ss", so only the legacy form finds it.
    await create_admin(app, "weiß@example.com")
    for typed in ("weiß@example.com", "WEIß@example.com"):
        response = await client.post(
            "/api/auth/admin/login", json={"email": typed, "password": PASSWORD}
        )
        assert response.status_code == 200, typed
