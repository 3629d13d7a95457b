"""/docs, /redoc and /openapi.json: served in development, off elsewhere unless enabled."""

import secrets
from typing import Any

import pytest

from tests.support.apps import AppFactory, client_for

DOC_PATHS = ("/docs", "/redoc", "/openapi.json")
# Production as the start-up guards accept it (Postgres from app_with, no Redis on purpose).
PRODUCTION: dict[str, Any] = {
    "environment": "production",
    "jwt_secret": secrets.token_urlsafe(48),
    "allow_no_redis": True,
    "trusted_proxy_count": 2,
}


@pytest.mark.parametrize(
    ("overrides", "served"),
    [
        pytest.param({}, True, id="development"),
        pytest.param({"api_docs_enabled": False}, False, id="development-disabled"),
        pytest.param(PRODUCTION, False, id="production"),
        pytest.param({**PRODUCTION, "environment": "staging"}, False, id="staging"),
        pytest.param({**PRODUCTION, "api_docs_enabled": True}, True, id="production-enabled"),
    ],
)
async def test_api_docs_follow_the_environment_and_the_setting(
    app_with: AppFactory, overrides: dict[str, Any], served: bool
) -> None:
    async with app_with(**overrides) as app, client_for(app) as client:
        responses = {path: await client.get(path) for path in DOC_PATHS}
        # The API itself is there either way.
        assert (await client.get("/api/jobs")).status_code == 200
    for path, response in responses.items():
        if served:
            assert response.status_code == 200, path
        else:
            assert response.status_code == 404, path
            assert response.json()["error"]["code"] == "not_found"
    if served:
        assert responses["/openapi.json"].json()["paths"]
