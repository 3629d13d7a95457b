"""Breaker policies come from settings: CIRCUIT_BREAKER_* for every breaker, CIRCUIT_BREAKERS per
breaker, validated at startup and acted on by a real server process."""

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsError

from app.config import Settings
from app.security import create_access_token
from app.services.circuit_breaker import breaker_config, create_breakers
from tests.conftest import TEST_JWT_SECRET, make_settings
from tests.support.database import asyncpg_dsn
from tests.support.fake_upstream import FakeUpstream
from tests.support.uvicorn_processes import BACKEND_DIR, UvicornProcesses

BODY = {"topic": "Kubernetes", "count": 2, "difficulty": "easy"}
# Values unlike every default (5 failures; 30 s, or 60 s for Gemini), so only settings explain them.
THRESHOLD = 3
RECOVERY = 20.0
GEMINI_RECOVERY = 300.0
S3_THRESHOLD = 7


def test_defaults_are_the_plan() -> None:
    settings = Settings()

    policies = {name: breaker_config(settings, name) for name in ("gemini", "pinecone", "s3")}

    assert {name: (c.failure_threshold, c.recovery_timeout) for name, c in policies.items()} == {
        "gemini": (5, 60.0),
        "pinecone": (5, 30.0),
        "s3": (5, 30.0),
    }
    assert {(c.success_threshold, c.half_open_max_calls) for c in policies.values()} == {(2, 1)}


def test_global_settings_then_per_breaker_overrides() -> None:
    settings = Settings(
        circuit_breaker_failure_threshold=THRESHOLD,
        circuit_breaker_recovery_timeout=RECOVERY,
        circuit_breakers={"s3": {"failure_threshold": S3_THRESHOLD, "success_threshold": 3}},
    )

    registry = create_breakers(settings, None)

    assert {b.name: (b.config.failure_threshold, b.config.recovery_timeout) for b in registry} == {
        "cloudinary": (THRESHOLD, RECOVERY),
        # CIRCUIT_BREAKERS replaces its default, so Gemini's 60 s is gone too.
        "gemini": (THRESHOLD, RECOVERY),
        "pinecone": (THRESHOLD, RECOVERY),
        "s3": (S3_THRESHOLD, RECOVERY),
    }
    assert registry["s3"].config.success_threshold == 3
    assert registry["pinecone"].config.success_threshold == 2


def test_the_default_gemini_override_keeps_its_recovery_under_new_globals() -> None:
    settings = Settings(circuit_breaker_failure_threshold=THRESHOLD)

    assert breaker_config(settings, "gemini").failure_threshold == THRESHOLD
    assert breaker_config(settings, "gemini").recovery_timeout == 60.0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('{"gemeni": {"failure_threshold": 3}}', "Input should be 'gemini', 'pinecone'"),
        ('{"gemini": {"failure_treshold": 3}}', "Extra inputs are not permitted"),
        ('{"gemini": {"failure_threshold": 0}}', "greater than or equal to 1"),
        ('{"s3": {"recovery_timeout": -1}}', "greater than 0"),
        ('{"s3": 5}', "valid dictionary"),
    ],
)
def test_invalid_circuit_breakers_stop_the_settings(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv("CIRCUIT_BREAKERS", value)

    with pytest.raises(ValidationError) as error:
        Settings()

    assert "circuit_breakers." in str(error.value)
    assert message in str(error.value)


def test_circuit_breakers_must_be_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIRCUIT_BREAKERS", "gemini=3")

    with pytest.raises(SettingsError, match='field "circuit_breakers"'):
        Settings()


def test_a_server_with_an_unknown_breaker_does_not_start(tmp_path: Path) -> None:
    env = {
        **_server_env(tmp_path),
        "CIRCUIT_BREAKERS": '{"supabase_storage": {"failure_threshold": 3}}',
    }

    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", "app.main:app", "--port", "0"],
        cwd=BACKEND_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode != 0
    assert "circuit_breakers.supabase_storage" in result.stderr
    assert "Input should be 'gemini', 'pinecone', 'cloudinary' or 's3'" in result.stderr


def _server_env(tmp_path: Path) -> dict[str, str]:
    return {
        "ENVIRONMENT": "development",
        "JWT_SECRET": TEST_JWT_SECRET,
        "DATA_DIR": str(tmp_path / "server-data"),
        "RATE_LIMIT_ENABLED": "false",
        "CACHE_ENABLED": "false",
    }


@pytest.fixture
def server(
    tmp_path: Path, postgres_url: str, redis_url: str, upstream: FakeUpstream
) -> Iterator[str]:
    """One uvicorn process calling the fake upstream as Gemini, breakers set by its environment."""
    env = {
        **_server_env(tmp_path),
        "DATABASE_URL": postgres_url,
        "REDIS_URL": redis_url,
        # A loaded machine must not push the breakers to their Redis-down path mid-test.
        "REDIS_SOCKET_TIMEOUT_SECONDS": "5",
        "REDIS_CONNECT_TIMEOUT_SECONDS": "5",
        "AI_BACKEND": "gemini",
        "GEMINI_API_KEY": upstream.api_key,
        "GEMINI_BASE_URL": upstream.url,
        "CIRCUIT_BREAKER_FAILURE_THRESHOLD": str(THRESHOLD),
        "CIRCUIT_BREAKER_RECOVERY_TIMEOUT": str(RECOVERY),
        "CIRCUIT_BREAKERS": json.dumps(
            {
                "gemini": {"recovery_timeout": GEMINI_RECOVERY},
                "s3": {"failure_threshold": S3_THRESHOLD},
            }
        ),
    }
    with UvicornProcesses("app.main:app", 1, env) as processes:
        yield processes.urls[0]


def _admin_headers(tmp_path: Path, postgres_url: str) -> dict[str, str]:
    """A token signed with the server's JWT_SECRET for a real admin row (tokens are checked
    against the account behind them)."""

    async def insert_admin() -> int:
        connection = await asyncpg.connect(asyncpg_dsn(postgres_url))
        try:
            user_id: int = await connection.fetchval(
                "INSERT INTO users (email, password_hash, full_name, role, is_active, created_at)"
                " VALUES ($1, 'x', 'Breaker Admin', 'admin', true, now()) RETURNING id",
                f"breaker-admin-{uuid.uuid4().hex}@example.com",
            )
        finally:
            await connection.close()
        return user_id

    user_id = asyncio.run(insert_admin())
    token, _ = create_access_token(make_settings(tmp_path), user_id, "admin")
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.slow
def test_a_server_acts_on_the_breaker_settings_of_its_environment(
    server: str, upstream: FakeUpstream, tmp_path: Path, postgres_url: str
) -> None:
    headers = _admin_headers(tmp_path, postgres_url)
    with httpx.Client(base_url=server, timeout=30.0) as http:
        detailed = http.get("/health/detailed").json()["circuit_breakers"]
        assert {
            name: (item["failure_threshold"], item["recovery_timeout"])
            for name, item in detailed.items()
        } == {
            "cloudinary": (THRESHOLD, RECOVERY),
            "gemini": (THRESHOLD, GEMINI_RECOVERY),
            "pinecone": (THRESHOLD, RECOVERY),
            "s3": (S3_THRESHOLD, RECOVERY),
        }

        upstream.set_mode("503")
        failures = [
            http.post("/api/admin/ai-generate", headers=headers, json=BODY)
            for _ in range(THRESHOLD - 1)
        ]
        # The breaker opens on the failure this call reports, no earlier and no later.
        opened_after = time.monotonic()
        failures.append(http.post("/api/admin/ai-generate", headers=headers, json=BODY))
        rejected = http.post("/api/admin/ai-generate", headers=headers, json=BODY)
        gemini = http.get("/health/detailed").json()["circuit_breakers"]["gemini"]
        elapsed = time.monotonic() - opened_after

    assert [r.json()["error"]["code"] for r in failures] == ["upstream_unavailable"] * THRESHOLD
    assert upstream.calls() == THRESHOLD
    assert rejected.status_code == 503
    assert rejected.json()["error"]["code"] == "circuit_open"
    # Open for Gemini's configured recovery, less the time since it opened.
    assert GEMINI_RECOVERY - elapsed <= int(rejected.headers["retry-after"]) <= GEMINI_RECOVERY
    assert gemini["state"] == "open"
    assert gemini["shared"] is True
    assert GEMINI_RECOVERY - elapsed <= gemini["retry_after"] <= GEMINI_RECOVERY
