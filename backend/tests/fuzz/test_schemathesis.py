"""Schemathesis over the whole OpenAPI schema against a real server process on Postgres.

The schema comes from the app object (docs may be off outside development). Schemathesis's
engine (what its CLI runs: the examples, coverage and fuzzing phases, valid and invalid input)
goes over every operation twice, once with a candidate's token and once with an admin's, with
seeded rows so that ids exist. Checks: no 5xx, responses match their documented schema and
content type; and the server logged no error.
"""

import time
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events, from_schema

from app.main import create_app
from tests.conftest import make_settings
from tests.support.apps import client_for
from tests.support.factories import admin_token, auth, create_job, create_test, register_candidate
from tests.support.gunicorn_server import GunicornServer

pytestmark = pytest.mark.slow

# Fuzzing examples per operation (the coverage phase adds its boundary cases, ~1100 per role):
# one pass, bounded so the whole run stays around a minute on 2 cores.
MAX_EXAMPLES = 20
CHECKS = ("not_a_server_error", "response_schema_conformance", "content_type_conformance")


async def _seed(tmp_path: Path, database_url: str) -> dict[str, str]:
    """A candidate with a profile, an admin, jobs and a test with questions."""
    app = create_app(make_settings(tmp_path / "seed", database_url=database_url))
    async with app.router.lifespan_context(app):
        await create_test(app, questions=4)
        for n in range(3):
            await create_job(app, title=f"Fuzz job {n}")
        async with client_for(app) as client:
            admin = await admin_token(app, client)
            candidate = (await register_candidate(client))["access_token"]
            profile = await client.patch(
                "/api/profile",
                headers=auth(candidate),
                json={"summary": "Python developer", "skills": ["python"], "experience_years": 4},
            )
            assert profile.status_code == 200, profile.text
    return {"candidate": candidate, "admin": admin}


def _config(base_url: str, token: str) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "base-url": base_url,
            "headers": auth(token),
            "seed": 13,
            "workers": 1,
            "request-timeout": 30,
            "continue-on-failure": True,
            "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "no-shrink": True},
            "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
            "phases": {
                # Wrong-method probes only meet the framework's 405.
                "coverage": {"unexpected-methods": []},
                # Stateful runs chain calls through links the schema does not declare.
                "stateful": {"enabled": False},
            },
        }
    )


def _run(openapi: dict[str, Any], base_url: str, token: str) -> tuple[int, list[str]]:
    """Run the engine; the number of requests sent and a line per failure."""
    schema = schemathesis.openapi.from_dict(openapi, config=_config(base_url, token))
    requests = 0
    failures: list[str] = []
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            requests += sum(
                1 for step in event.recorder.interactions.values() if step.response is not None
            )
            if event.status in (Status.FAILURE, Status.ERROR):
                for check in event.recorder.checks.values():
                    for result in check:
                        if result.status is Status.FAILURE and result.failure_info is not None:
                            failure = result.failure_info.failure
                            failures.append(f"{event.label}: {failure.title}: {failure.message}")
                if event.status is Status.ERROR:
                    failures.append(f"{event.label}: errored")
        elif isinstance(event, events.NonFatalError | events.FatalError):
            failures.append(f"engine error: {event}")
        elif isinstance(event, events.EngineFinished):
            assert event.stop_reason.value == "completed", event.stop_reason
    return requests, failures


async def test_whole_schema_has_no_server_errors_or_schema_violations(
    tmp_path: Path, database_url: str
) -> None:
    tokens = await _seed(tmp_path, database_url)
    openapi = create_app(make_settings(tmp_path / "schema", database_url=database_url)).openapi()
    server = GunicornServer(
        "app.main:app",
        database_url=database_url,
        workers=1,
        env={"PASSWORD_HASH_TIME_COST": "1", "PASSWORD_HASH_MEMORY_KIB": "1024"},
    )
    server.start()
    started = time.perf_counter()
    total = 0
    failures: list[str] = []
    try:
        for role in ("candidate", "admin"):
            sent, found = _run(openapi, server.url, tokens[role])
            total += sent
            failures += [f"[{role}] {line}" for line in found]
    finally:
        server.stop()
    elapsed = time.perf_counter() - started
    print(f"\nschemathesis: {total} requests in {elapsed:.1f}s (candidate and admin)")
    assert failures == [], "\n".join(failures)
    errors = [r for r in server.log_records() if r.get("level") in ("ERROR", "CRITICAL")]
    assert errors == []
