"""Start-up guard: outside development the app refuses to run without a real JWT_SECRET."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.config import Settings
from app.config.settings import MIN_SECRET_LENGTH, PLACEHOLDER_SECRETS
from tests.support.database import BACKEND_DIR
from tests.support.redis_server import free_port

REPO_ROOT = BACKEND_DIR.parent
GUARD_MESSAGE = "JWT_SECRET must be set"
# Interpreter start and the app's imports, on a loaded 2-core machine.
START_SECONDS = 60.0

PLACEHOLDERS = sorted(PLACEHOLDER_SECRETS)
BAD_SECRETS = [
    pytest.param(None, id="missing"),
    pytest.param(secrets.token_urlsafe(48)[: MIN_SECRET_LENGTH - 1], id="random-31-chars"),
    *(pytest.param(value, id=value) for value in PLACEHOLDERS),
    *(pytest.param(value.upper(), id=f"{value}-upper") for value in PLACEHOLDERS),
    pytest.param("ChangeMe", id="ChangeMe"),
]


def _settings_from_environment(
    monkeypatch: pytest.MonkeyPatch, environment: str, jwt_secret: str | None
) -> Settings:
    """Settings() as a server builds them: from the environment (no .env file)."""
    monkeypatch.setenv("ENVIRONMENT", environment)
    if jwt_secret is None:
        monkeypatch.delenv("JWT_SECRET", raising=False)
    else:
        monkeypatch.setenv("JWT_SECRET", jwt_secret)
    return Settings(_env_file=None)


@pytest.mark.parametrize("environment", ["production", "staging"])
@pytest.mark.parametrize("jwt_secret", BAD_SECRETS)
def test_outside_development_a_weak_jwt_secret_is_refused(
    monkeypatch: pytest.MonkeyPatch, environment: str, jwt_secret: str | None
) -> None:
    with pytest.raises(ValidationError) as error:
        _settings_from_environment(monkeypatch, environment, jwt_secret)

    assert GUARD_MESSAGE in str(error.value)
    assert f"ENVIRONMENT={environment}" in str(error.value)


@pytest.mark.parametrize("environment", ["production", "staging"])
@pytest.mark.parametrize("length", [MIN_SECRET_LENGTH, 64])
def test_outside_development_a_long_random_jwt_secret_is_accepted(
    monkeypatch: pytest.MonkeyPatch, environment: str, length: int
) -> None:
    secret = secrets.token_urlsafe(48)[:length]
    assert len(secret) == length

    settings = _settings_from_environment(monkeypatch, environment, secret)

    assert settings.environment == environment
    assert settings.jwt_signing_key() == secret


def test_development_starts_without_jwt_secret(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DATA_DIR", str(tmp_path))

    settings = _settings_from_environment(monkeypatch, "development", None)

    assert settings.jwt_secret is None
    # A generated random key (kept in DATA_DIR), never a fixed one.
    assert len(settings.jwt_signing_key()) >= MIN_SECRET_LENGTH


def _start_production_server(
    server: str, tmp_path: Path, jwt_secret: str | None
) -> subprocess.CompletedProcess[str]:
    """Start the web app as `server` does in production; it must exit on its own."""
    # Only what a bare instance has: no DATABASE_URL, REDIS_URL or pooler settings.
    env = {"PATH": os.environ["PATH"], "ENVIRONMENT": "production", "DATA_DIR": str(tmp_path)}
    if jwt_secret is not None:
        env["JWT_SECRET"] = jwt_secret
    if server == "gunicorn":
        # Procfile.web, from the repository root (gunicorn.conf.py chdirs into backend/).
        env["GUNICORN_BIND"] = f"127.0.0.1:{free_port()}"
        env["GUNICORN_WORKERS"] = "1"
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "metrics")
        command = ["-m", "gunicorn", "--config", "gunicorn.conf.py", "app.main:app"]
        cwd = REPO_ROOT
    else:
        command = ["-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", "0"]
        cwd = BACKEND_DIR
    return subprocess.run(
        [sys.executable, *command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=START_SECONDS,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
@pytest.mark.parametrize("jwt_secret", [None, "changeme"], ids=["missing", "changeme"])
def test_a_production_server_with_a_weak_jwt_secret_does_not_start(
    tmp_path: Path, server: str, jwt_secret: str | None
) -> None:
    result = _start_production_server(server, tmp_path, jwt_secret)

    assert result.returncode != 0
    assert GUARD_MESSAGE in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
def test_a_refused_jwt_secret_is_not_echoed(tmp_path: Path, server: str) -> None:
    result = _start_production_server(server, tmp_path, "changeme")

    assert GUARD_MESSAGE in result.stderr
    assert "changeme" not in result.stderr
