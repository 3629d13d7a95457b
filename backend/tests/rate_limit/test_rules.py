"""The tier table, path categories and client-address parsing."""

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
from app.middleware.client_ip import ClientIP
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
        ("POST", "/api/auth/register", "auth"),
        ("POST", "/api/auth/forgot-password", "auth"),
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


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.9", "203.0.113.9"),
        (" 203.0.113.9 ", "203.0.113.9"),
        ("203.0.113.9:4431", "203.0.113.9"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("[2001:db8:1:2:bbbb::9]:443", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:198.51.100.1", "198.51.100.1"),
        ("not-an-ip", "not-an-ip"),
        ("", ""),
    ],
)
def test_client_key_from_the_socket_peer(address: str, key: str) -> None:
    # IPv6 clients share a key per /64 (one subscriber's network); an unparsable peer keys as is.
    assert ClientIP(0)(address, None) == key


@pytest.mark.parametrize(
    ("forwarded", "hops", "expected"),
    [
        (None, 0, "10.0.0.1"),
        ("6.6.6.6", 0, "10.0.0.1"),  # no trusted proxy: the header is the client's own words
        ("6.6.6.6, 203.0.113.5", 1, "203.0.113.5"),  # one proxy appended the real client
        ("1.1.1.1, 6.6.6.6, 203.0.113.5, 172.31.0.9", 2, "203.0.113.5"),  # EB: ALB + nginx
        ("203.0.113.5", 2, "203.0.113.5"),  # shorter than the chain: the left-most entry
        ("garbage, x", 1, "10.0.0.1"),  # unusable entry: the socket peer
    ],
)
def test_client_ip_reads_forwarded_for_from_the_right(
    forwarded: str | None, hops: int, expected: str
) -> None:
    assert ClientIP(hops)("10.0.0.1", forwarded) == expected


EB_NETWORKS = ["127.0.0.1/32", "172.31.0.0/16"]  # nginx on the instance, the ALB in the VPC


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("127.0.0.1", "6.6.6.6, 203.0.113.5, 172.31.4.4", "203.0.113.5"),
        ("127.0.0.1", "203.0.113.5, 172.31.4.4", "203.0.113.5"),
        ("127.0.0.1", "172.31.9.9, 172.31.4.4", "172.31.9.9"),  # all trusted: the left-most
        ("198.51.100.3", "6.6.6.6", "198.51.100.3"),  # untrusted peer: its header is ignored
        ("127.0.0.1", "2001:db8:9:9::5, 172.31.4.4", "2001:db8:9:9::/64"),
    ],
)
def test_client_ip_with_trusted_networks(peer: str, forwarded: str, expected: str) -> None:
    assert ClientIP(0, EB_NETWORKS)(peer, forwarded) == expected
