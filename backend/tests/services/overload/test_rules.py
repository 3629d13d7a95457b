"""The priority table: the defaults against the app's real routes, overrides, and what fails."""

import pytest
from pydantic import ValidationError
from starlette.routing import Match

from app.config import Settings
from app.config.priorities import PriorityRule
from app.main import create_app
from app.services.overload.rules import PriorityRules


def default_rules(settings: Settings | None = None) -> PriorityRules:
    settings = settings or Settings()
    return PriorityRules(
        exact_paths=settings.overload_priority_paths,
        prefix_rules=settings.overload_priority_prefixes,
        method_priorities=settings.overload_method_priorities,
        exempt_paths=settings.overload_never_shed_paths,
    )


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        # Taking a test.
        ("POST", "/api/tests/start", "critical"),
        ("POST", "/api/tests/17/answer", "critical"),
        ("POST", "/api/tests/submit", "critical"),
        ("POST", "/api/tests/complete", "critical"),
        # Candidates' reads and writes, admin pages.
        ("GET", "/api/tests/available", "normal"),
        ("GET", "/api/jobs", "normal"),
        ("GET", "/api/jobs/5", "normal"),
        ("GET", "/api/profile", "normal"),
        ("POST", "/api/profile/resume", "normal"),
        ("POST", "/api/auth/login", "normal"),
        ("POST", "/api/auth/register", "normal"),
        ("PATCH", "/api/admin/jobs/3", "normal"),
        ("PUT", "/api/admin/breakers/gemini", "normal"),
        # Admin search, AI generation, reports, health detail.
        ("GET", "/api/admin/candidates/search", "background"),
        ("POST", "/api/admin/ai-generate", "background"),
        ("GET", "/api/admin/results", "background"),
        ("GET", "/api/admin/dashboard", "background"),
        ("GET", "/health/detailed", "background"),
        # Never shed.
        ("GET", "/health", None),
        ("GET", "/health/ready", None),
        ("GET", "/metrics", None),
    ],
)
def test_default_priorities(method: str, path: str, expected: str | None) -> None:
    assert default_rules().priority(method, path) == expected


def test_every_default_path_is_a_route_of_the_app() -> None:
    """A renamed route must not silently lose its priority."""
    settings = Settings()
    app = create_app(settings)

    def routed(path: str) -> bool:
        scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "headers": []}
        # PARTIAL: the path matches and only the method differs.
        return any(route.matches(scope)[0] is not Match.NONE for route in app.routes)

    named = [
        *settings.overload_priority_paths,
        *settings.overload_never_shed_paths,
        *settings.overload_attempt_auth_paths,
        *settings.overload_attempt_end_paths,
        "/api/tests/17/answer",
    ]
    assert [path for path in named if not routed(path)] == []
    assert not routed("/api/tests/17/answers")


def test_the_table_is_configurable_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OVERLOAD_PRIORITY_PATHS", '{"/api/jobs": "background"}')
    monkeypatch.setenv(
        "OVERLOAD_PRIORITY_PREFIXES", '[{"prefix": "/api/admin/", "priority": "background"}]'
    )
    monkeypatch.setenv("OVERLOAD_METHOD_PRIORITIES", '{"DELETE": "background"}')
    rules = default_rules(Settings())
    assert rules.priority("GET", "/api/jobs") == "background"
    assert rules.priority("PATCH", "/api/admin/jobs/3") == "background"
    assert rules.priority("DELETE", "/api/profile") == "background"
    # The value replaced the whole default: start is no longer named, so it is normal.
    assert rules.priority("POST", "/api/tests/start") == "normal"


def test_an_unknown_priority_fails_when_settings_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OVERLOAD_PRIORITY_PATHS", '{"/api/jobs": "urgent"}')
    with pytest.raises(ValidationError):
        Settings()


def test_a_path_both_exempt_and_prioritised_is_refused() -> None:
    with pytest.raises(ValueError, match="/health/detailed"):
        PriorityRules(
            exact_paths={"/health/detailed": "background"},
            prefix_rules=[],
            method_priorities={},
            exempt_paths=["/health", "/health/detailed"],
        )


def test_prefix_rules_apply_in_order_after_exact_paths() -> None:
    rules = PriorityRules(
        exact_paths={"/api/admin/breakers": "critical"},
        prefix_rules=[
            PriorityRule(prefix="/api/admin/", contains="/search", priority="background"),
            PriorityRule(prefix="/api/admin/", priority="normal"),
        ],
        method_priorities={"get": "background"},
        exempt_paths=[],
    )
    assert rules.priority("GET", "/api/admin/breakers") == "critical"
    assert rules.priority("GET", "/api/admin/candidates/search") == "background"
    assert rules.priority("GET", "/api/admin/jobs") == "normal"
    assert rules.priority("GET", "/api/jobs") == "background"
    assert rules.priority("POST", "/api/jobs") == "normal"
