"""Start-up guards: outside development the app refuses unsafe or silently wrong settings.

A weak JWT_SECRET, the embedded SQLite database, no Redis and (web app only) no trusted proxy
setting each stop start-up unless their ALLOW_* setting says they are meant; the error names
the setting to fix and the allow setting, never a secret.
"""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.config import Settings
from app.config.settings import (
    MIN_SECRET_ENTROPY_BITS,
    MIN_SECRET_LENGTH,
    PLACEHOLDER_SECRETS,
    estimate_entropy_bits,
)
from app.main import create_app
from app.worker_app import create_worker_app
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
# 32+ characters, but far below 256 bits: repeated, sequential, a phrase, or too few characters
# for their alphabet (32 random base64 characters carry 192 bits).
LOW_ENTROPY_SECRETS = [
    pytest.param("a" * 64, id="one-letter"),
    pytest.param("ab" * 32, id="two-letters"),
    pytest.param("changeme" * 8, id="repeated-placeholder"),
    pytest.param("0123456789abcdef" * 4, id="hex-sequence"),
    pytest.param("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", id="alphabet"),
    pytest.param("the quick brown fox jumps over the lazy dog near the river", id="phrase"),
    pytest.param("Correct-Horse-Battery-Staple-Jwt-Signing-Key-2024!", id="phrase-dashes"),
    pytest.param("qwertyuiopasdfghjklzxcvbnmqwertyuiopasdfghjkl", id="keyboard"),
    pytest.param(secrets.token_urlsafe(48)[:MIN_SECRET_LENGTH], id="random-32-chars"),
]
GOOD_SECRETS = [
    pytest.param(secrets.token_urlsafe(48), id="token_urlsafe-48"),
    pytest.param(secrets.token_hex(32), id="token_hex-32"),
    pytest.param(secrets.token_hex(32).upper(), id="token_hex-32-upper"),
    pytest.param(secrets.token_bytes(48).hex(), id="96-hex-chars"),
]
# What production needs besides the key (no connection is made by building Settings).
BACKENDS = {
    "DATABASE_URL": "postgresql+asyncpg://app@db.internal/hiring_pro",
    "REDIS_URL": "redis://cache.internal:6379/0",
}


def _settings_from_environment(
    monkeypatch: pytest.MonkeyPatch,
    environment: str,
    jwt_secret: str | None,
    **variables: str,
) -> Settings:
    """Settings() as a server builds them: from the environment (no .env file).

    Production backends are set unless `variables` name them ("" removes one).
    """
    monkeypatch.setenv("ENVIRONMENT", environment)
    if jwt_secret is None:
        monkeypatch.delenv("JWT_SECRET", raising=False)
    else:
        monkeypatch.setenv("JWT_SECRET", jwt_secret)
    for name, value in {**BACKENDS, **variables}.items():
        if value:
            monkeypatch.setenv(name, value)
        else:
            monkeypatch.delenv(name, raising=False)
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
@pytest.mark.parametrize("jwt_secret", GOOD_SECRETS)
def test_outside_development_a_random_256_bit_jwt_secret_is_accepted(
    monkeypatch: pytest.MonkeyPatch, environment: str, jwt_secret: str
) -> None:
    settings = _settings_from_environment(monkeypatch, environment, jwt_secret)

    assert settings.environment == environment
    assert settings.jwt_signing_key() == jwt_secret


@pytest.mark.parametrize("jwt_secret", LOW_ENTROPY_SECRETS)
def test_a_low_entropy_jwt_secret_is_refused_unless_allowed(
    monkeypatch: pytest.MonkeyPatch, jwt_secret: str
) -> None:
    assert len(jwt_secret) >= MIN_SECRET_LENGTH
    assert estimate_entropy_bits(jwt_secret) < MIN_SECRET_ENTROPY_BITS

    with pytest.raises(ValidationError) as error:
        _settings_from_environment(monkeypatch, "production", jwt_secret)
    message = str(error.value)
    assert GUARD_MESSAGE in message
    assert "ALLOW_LOW_ENTROPY_JWT_SECRET=true" in message
    assert jwt_secret not in message

    allowed = _settings_from_environment(
        monkeypatch, "production", jwt_secret, ALLOW_LOW_ENTROPY_JWT_SECRET="true"
    )
    assert allowed.jwt_signing_key() == jwt_secret


@pytest.mark.parametrize("jwt_secret", BAD_SECRETS)
def test_the_allow_setting_never_admits_a_missing_short_or_placeholder_secret(
    monkeypatch: pytest.MonkeyPatch, jwt_secret: str | None
) -> None:
    with pytest.raises(ValidationError, match=GUARD_MESSAGE):
        _settings_from_environment(
            monkeypatch, "production", jwt_secret, ALLOW_LOW_ENTROPY_JWT_SECRET="true"
        )


def test_entropy_estimate_rates_random_keys_by_their_alphabet() -> None:
    assert estimate_entropy_bits(secrets.token_hex(32)) == 256
    assert estimate_entropy_bits(secrets.token_urlsafe(48)) > 300
    assert estimate_entropy_bits("") == 0
    assert estimate_entropy_bits("a" * 64) < 32
    # Not ASCII: counted as "other" characters, and repetition still counts for little.
    assert estimate_entropy_bits("\u5bc6" * 64) < 64


@pytest.mark.parametrize(
    ("missing", "allow", "fix"),
    [
        ("DATABASE_URL", "ALLOW_SQLITE", "DATABASE_URL"),
        ("REDIS_URL", "ALLOW_NO_REDIS", "REDIS_URL"),
    ],
)
@pytest.mark.parametrize("environment", ["production", "staging"])
def test_outside_development_embedded_backends_are_refused_unless_allowed(
    monkeypatch: pytest.MonkeyPatch, environment: str, missing: str, allow: str, fix: str
) -> None:
    secret = secrets.token_urlsafe(48)
    with pytest.raises(ValidationError) as error:
        _settings_from_environment(monkeypatch, environment, secret, **{missing: ""})
    message = str(error.value)
    assert f"ENVIRONMENT={environment}" in message
    assert f"set {fix}" in message
    assert f"{allow}=true" in message
    assert secret not in message

    settings = _settings_from_environment(
        monkeypatch, environment, secret, **{missing: "", allow: "true"}
    )
    assert settings.environment == environment


def test_every_refusal_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError) as error:
        _settings_from_environment(
            monkeypatch, "production", "changeme", DATABASE_URL="", REDIS_URL=""
        )
    message = str(error.value)
    for part in (GUARD_MESSAGE, "ALLOW_SQLITE=true", "ALLOW_NO_REDIS=true"):
        assert part in message


@pytest.mark.parametrize("environment", ["production", "staging"])
def test_web_app_without_a_trusted_proxy_setting_is_refused_unless_allowed(
    monkeypatch: pytest.MonkeyPatch, environment: str
) -> None:
    settings = _settings_from_environment(monkeypatch, environment, secrets.token_urlsafe(48))
    with pytest.raises(ValueError, match="TRUSTED_PROXY_COUNT") as error:
        create_app(settings)
    assert "TRUSTED_PROXY_CIDRS" in str(error.value)
    assert "ALLOW_DIRECT_CLIENTS=true" in str(error.value)

    for variables in (
        {"TRUSTED_PROXY_COUNT": "2"},
        {"TRUSTED_PROXY_CIDRS": '["127.0.0.1/32", "10.0.0.0/8"]'},
        {"ALLOW_DIRECT_CLIENTS": "true"},
    ):
        accepted = _settings_from_environment(
            monkeypatch, environment, secrets.token_urlsafe(48), **variables
        )
        assert create_app(accepted).state.settings is accepted


def test_worker_app_needs_no_trusted_proxy_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker app answers the local sqsd only (loopback, checked hop by hop)."""
    settings = _settings_from_environment(monkeypatch, "production", secrets.token_urlsafe(48))

    assert create_worker_app(settings).state.settings is settings


def test_a_malformed_trusted_proxy_network_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="trusted_proxy_cidrs"):
        _settings_from_environment(
            monkeypatch, "development", None, TRUSTED_PROXY_CIDRS='["10.0.0.0/33"]'
        )


def test_development_starts_without_jwt_secret_or_backends(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DATA_DIR", str(tmp_path))

    settings = _settings_from_environment(
        monkeypatch, "development", None, DATABASE_URL="", REDIS_URL=""
    )
    create_app(settings)

    assert settings.jwt_secret is None
    # A generated random key (kept in DATA_DIR), never a fixed one.
    assert len(settings.jwt_signing_key()) >= MIN_SECRET_LENGTH


def _start_production_server(
    server: str, tmp_path: Path, jwt_secret: str | None, **variables: str
) -> subprocess.CompletedProcess[str]:
    """Start the web app as `server` does in production; it must exit on its own."""
    # Only what a bare instance has: no DATABASE_URL, REDIS_URL or pooler settings.
    env = {
        "PATH": os.environ["PATH"],
        "ENVIRONMENT": "production",
        "DATA_DIR": str(tmp_path),
        **variables,
    }
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


@pytest.mark.slow
@pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
def test_a_bare_production_server_names_every_setting_it_needs(tmp_path: Path, server: str) -> None:
    secret = secrets.token_urlsafe(48)
    result = _start_production_server(server, tmp_path, secret)

    assert result.returncode != 0
    for part in ("set DATABASE_URL", "ALLOW_SQLITE=true", "set REDIS_URL", "ALLOW_NO_REDIS=true"):
        assert part in result.stderr
    assert secret not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
def test_a_production_web_server_without_a_trusted_proxy_setting_does_not_start(
    tmp_path: Path, server: str
) -> None:
    result = _start_production_server(
        server, tmp_path, secrets.token_urlsafe(48), ALLOW_SQLITE="true", ALLOW_NO_REDIS="true"
    )

    assert result.returncode != 0
    assert "TRUSTED_PROXY_COUNT" in result.stderr
    assert "ALLOW_DIRECT_CLIENTS=true" in result.stderr


@pytest.mark.slow
def test_the_production_worker_app_loads_without_a_trusted_proxy_setting(tmp_path: Path) -> None:
    """Procfile.worker's module builds its app at import, as gunicorn does; the web app's
    module, in the same environment, refuses."""
    env = {
        "PATH": os.environ["PATH"],
        "ENVIRONMENT": "production",
        "DATA_DIR": str(tmp_path),
        "JWT_SECRET": secrets.token_urlsafe(48),
        **BACKENDS,
    }

    def load(module: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", f"import {module}"],
            cwd=BACKEND_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=START_SECONDS,
            check=False,
        )

    worker = load("app.worker_app")
    assert worker.returncode == 0, worker.stderr
    web = load("app.main")
    assert web.returncode != 0
    assert "TRUSTED_PROXY_COUNT" in web.stderr
