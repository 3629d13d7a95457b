"""Request ids and log lines: what the app's real handler writes, in JSON and in text."""

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from fastapi import FastAPI

from tests.support.apps import AppFactory, client_for
from tests.support.factories import auth, register_candidate

route_logger = logging.getLogger("tests.middleware.route")


class LogCapture:
    """Redirects the app's own root handler (installed by create_app) into a buffer."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    def attach(self) -> None:
        handlers = [
            handler
            for handler in logging.getLogger().handlers
            if getattr(handler, "_hiringpro_handler", False)
        ]
        assert len(handlers) == 1, "create_app installs exactly one app handler"
        handler = handlers[0]
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(self.stream)

    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines()]


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    yield LogCapture()


def add_test_routes(app: FastAPI) -> None:
    async def log_inside(item: int) -> dict[str, int]:
        route_logger.info("inside the route", extra={"item": item})
        return {"item": item}

    async def explode() -> None:
        raise RuntimeError("secret internals")

    app.add_api_route("/ops-test/log/{item}", log_inside)
    app.add_api_route("/ops-test/explode", explode)


async def test_request_id_generated_when_absent_and_echoed_when_valid(
    app_with: AppFactory,
) -> None:
    async with app_with() as app, client_for(app) as client:
        first = await client.get("/health")
        second = await client.get("/health")
        echoed = await client.get("/health", headers={"X-Request-ID": "lb-1234:abc.DEF_9"})
    assert re.fullmatch(r"[0-9a-f]{32}", first.headers["x-request-id"])
    assert first.headers["x-request-id"] != second.headers["x-request-id"]
    assert echoed.headers["x-request-id"] == "lb-1234:abc.DEF_9"


@pytest.mark.parametrize("bad", ["has space", "x" * 129, "-leading-dash", 'quote"d', "é"])
async def test_malformed_request_id_is_replaced(app_with: AppFactory, bad: str) -> None:
    async with app_with() as app, client_for(app) as client:
        response = await client.get("/health", headers={b"X-Request-ID": bad.encode()})
    assert response.headers["x-request-id"] != bad
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


async def test_json_logs_carry_request_id_on_every_line_and_one_access_line(
    app_with: AppFactory, logs: LogCapture
) -> None:
    async with app_with(log_format="json") as app, client_for(app) as client:
        add_test_routes(app)
        logs.attach()
        await client.get("/ops-test/log/7", headers={"X-Request-ID": "req-0001"})
        route_logger.info("outside any request")
    records = logs.records()
    inside = [r for r in records if r["message"] == "inside the route"]
    access = [r for r in records if r["logger"] == "app.access"]
    outside = [r for r in records if r["message"] == "outside any request"]
    assert len(inside) == 1 and inside[0]["request_id"] == "req-0001"
    assert inside[0]["item"] == 7
    assert len(access) == 1
    assert access[0]["request_id"] == "req-0001"
    assert access[0]["method"] == "GET"
    assert access[0]["route"] == "/ops-test/log/{item}"  # the template, not /ops-test/log/7
    assert access[0]["status"] == 200
    assert access[0]["duration_ms"] >= 0
    assert access[0]["level"] == "INFO"
    assert "request_id" not in outside[0]


async def test_authenticated_requests_log_the_user(app_with: AppFactory, logs: LogCapture) -> None:
    async with app_with(log_format="json") as app, client_for(app) as client:
        token = (await register_candidate(client))["access_token"]
        user_id = int(jwt.decode(token, options={"verify_signature": False})["sub"])
        logs.attach()
        response = await client.get(
            "/api/profile", headers={**auth(token), "X-Request-ID": "req-user"}
        )
        anonymous = await client.get("/api/profile", headers={"X-Request-ID": "req-anon"})
    assert response.status_code == 200
    assert anonymous.status_code == 401
    access = {r["request_id"]: r for r in logs.records() if r["logger"] == "app.access"}
    assert access["req-user"]["user_id"] == user_id
    assert access["req-user"]["route"] == "/api/profile"
    assert access["req-anon"]["user_id"] is None
    assert access["req-anon"]["status"] == 401


async def test_text_logs_are_readable(app_with: AppFactory, logs: LogCapture) -> None:
    async with app_with(log_format="text") as app, client_for(app) as client:
        add_test_routes(app)
        logs.attach()
        await client.get("/ops-test/log/3", headers={"X-Request-ID": "req-text"})
    access = [line for line in logs.lines() if "app.access" in line]
    assert len(access) == 1
    assert "[req-text] app.access: GET /ops-test/log/{item} 200" in access[0]
    assert not access[0].startswith("{")


async def test_unhandled_error_logged_with_request_id_and_answered_in_shared_shape(
    app_with: AppFactory, logs: LogCapture
) -> None:
    async with app_with(log_format="json") as app, client_for(app) as client:
        add_test_routes(app)
        logs.attach()
        response = await client.get("/ops-test/explode", headers={"X-Request-ID": "req-boom"})
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "req-boom"
    assert response.json() == {
        "error": {"code": "internal_error", "message": "An internal error occurred."}
    }
    assert "secret internals" not in response.text
    errors = [r for r in logs.records() if r["level"] == "ERROR"]
    assert len(errors) == 1
    assert errors[0]["request_id"] == "req-boom"
    assert "RuntimeError: secret internals" in errors[0]["exception"]
    access = [r for r in logs.records() if r["logger"] == "app.access"]
    assert access[0]["status"] == 500
