"""The tier table and the path categories."""

import pytest

from app.config import Settings
from app.config.rate_limits import (
    DEFAULT_EXACT_PATHS,
    DEFAULT_EXEMPT_PATHS,
    DEFAULT_METHOD_CATEGORIES,
    DEFAULT_PREFIX_RULES,
    DEFAULT_TIERS,
    PathRule,
    RateLimitTier,
)
from app.services.ratelimit.rules import RateLimitRules


def default_rules() -> RateLimitRules:
    settings = Settings()
    return RateLimitRules(
        tiers=settings.rate_limit_tiers,
        exact_paths=settings.rate_limit_exact_paths,
        prefix_rules=settings.rate_limit_prefix_rules,
        method_categories=settings.rate_limit_method_categories,
        exempt_paths=settings.rate_limit_exempt_paths,
    )


def test_default_tiers_are_the_plans_table() -> None:
    table = {
        name: (tier.capacity, tier.refill, tier.period_seconds)
        for name, tier in DEFAULT_TIERS.items()
    }
    assert table == {
        "auth": (10, 10, 60),
        "ai_heavy": (5, 5, 60),
        "upload": (20, 20, 60),
        "read": (200, 200, 60),
        "write": (60, 60, 60),
        "default": (100, 100, 60),
    }


@pytest.mark.parametrize(
    ("method", "path", "category"),
    [
        ("POST", "/api/auth/login", "auth"),
        ("POST", "/api/auth/admin/login", "auth"),
        ("POST", "/api/auth/register", "auth"),
        ("POST", "/api/auth/forgot-password", "auth"),
        ("POST", "/api/auth/reset-password", "auth"),
        ("POST", "/api/profile/resume", "ai_heavy"),
        ("POST", "/api/admin/ai-generate", "ai_heavy"),
        ("GET", "/api/profile/resume-status", "read"),
        ("GET", "/api/jobs", "read"),
        ("GET", "/api/tests/available", "read"),
        ("POST", "/api/tests/submit", "write"),
        ("POST", "/api/tests/complete", "write"),
        ("GET", "/api/admin/dashboard", "write"),
        ("POST", "/api/tests/17/answer", "write"),
        ("GET", "/uploads/resumes/a.pdf", "upload"),
        ("GET", "/api/jobs/5", "read"),
        ("POST", "/api/notifications/3/read", "write"),
        ("DELETE", "/api/profile", "write"),
        ("PATCH", "/api/profile", "write"),
        ("OPTIONS", "/api/jobs/5", "default"),
    ],
)
def test_categories(method: str, path: str, category: str) -> None:
    assert default_rules().category(method, path) == category


@pytest.mark.parametrize(
    "path",
    ["/", "/health", "/health/ready", "/health/detailed", "/metrics", "/docs", "/openapi.json"],
)
def test_exempt_paths(path: str) -> None:
    assert default_rules().category("GET", path) is None


def test_only_the_auth_tier_is_keyed_by_client_address() -> None:
    keyed = {name: tier.key_by for name, tier in Settings().rate_limit_tiers.items()}
    assert keyed == {
        "auth": "ip",
        "ai_heavy": "user",
        "upload": "user",
        "read": "user",
        "write": "user",
        "default": "user",
    }


def test_key_by_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "RATE_LIMIT_TIERS", '{"default": {"capacity": 3, "refill": 1, "key_by": "ip"}}'
    )
    assert Settings().rate_limit_tiers == {
        "default": RateLimitTier(capacity=3, refill=1, key_by="ip")
    }
    monkeypatch.setenv(
        "RATE_LIMIT_TIERS", '{"default": {"capacity": 3, "refill": 1, "key_by": "x"}}'
    )
    with pytest.raises(ValueError, match="key_by"):
        Settings()


def test_tiers_and_rules_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "RATE_LIMIT_TIERS", '{"default": {"capacity": 3, "refill": 1, "shadow": true}}'
    )
    monkeypatch.setenv("RATE_LIMIT_EXACT_PATHS", '{"/api/jobs": "default"}')
    monkeypatch.setenv("RATE_LIMIT_PREFIX_RULES", "[]")
    monkeypatch.setenv("RATE_LIMIT_METHOD_CATEGORIES", "{}")
    settings = Settings()
    expected = {"default": RateLimitTier(capacity=3, refill=1, shadow=True)}
    assert settings.rate_limit_tiers == expected
    rules = RateLimitRules(
        tiers=settings.rate_limit_tiers,
        exact_paths=settings.rate_limit_exact_paths,
        prefix_rules=settings.rate_limit_prefix_rules,
        method_categories=settings.rate_limit_method_categories,
        exempt_paths=settings.rate_limit_exempt_paths,
    )
    assert rules.category("GET", "/api/jobs") == "default"
    assert rules.category("POST", "/api/admin/x") == "default"


def test_a_category_without_a_tier_is_refused_at_startup() -> None:
    with pytest.raises(ValueError, match="nope"):
        RateLimitRules(
            tiers=DEFAULT_TIERS,
            exact_paths=DEFAULT_EXACT_PATHS,
            prefix_rules=[*DEFAULT_PREFIX_RULES, PathRule(prefix="/x/", category="nope")],
            method_categories=DEFAULT_METHOD_CATEGORIES,
            exempt_paths=DEFAULT_EXEMPT_PATHS,
        )
