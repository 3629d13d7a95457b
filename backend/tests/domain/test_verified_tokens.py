"""Access tokens verified once per process: the cache answers only for tokens that verified,
and only until they expire."""

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest

from app.security import InvalidToken, VerifiedTokens, create_access_token
from tests.conftest import TEST_JWT_SECRET, make_settings


def tokens_counting_key_reads() -> tuple[VerifiedTokens, list[int]]:
    reads: list[int] = []

    def key() -> str:
        reads.append(1)
        return TEST_JWT_SECRET

    return VerifiedTokens(key), reads


def test_a_valid_token_is_verified_once_and_then_served_from_the_cache(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    token, _ = create_access_token(settings, 42, "candidate", version=3)
    tokens, reads = tokens_counting_key_reads()
    first = tokens.claims(token)
    assert (first.user_id, first.role, first.version) == (42, "candidate", 3)
    assert tokens.claims(token) is first
    assert len(reads) == 1


def test_forged_and_expired_tokens_are_refused_every_time(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    tokens, _ = tokens_counting_key_reads()
    now = datetime.now(UTC)
    forged = jwt.encode(
        {
            "sub": "1",
            "role": "admin",
            "iat": int(now.timestamp()),
            "exp": int(now.timestamp()) + 60,
        },
        "another-secret-another-secret-another-secret",
        algorithm="HS256",
    )
    expired, _ = create_access_token(settings, 7, "candidate", now=now - timedelta(days=2))
    for _ in range(2):
        with pytest.raises(InvalidToken):
            tokens.claims(forged)
        with pytest.raises(InvalidToken):
            tokens.claims(expired)


def test_a_cached_token_is_refused_once_it_expires(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    lifetime = settings.access_token_expire_minutes * 60
    # Issued so that it expires within two seconds.
    issued = datetime.now(UTC) - timedelta(seconds=lifetime - 2)
    token, _ = create_access_token(settings, 5, "admin", now=issued)
    tokens, _ = tokens_counting_key_reads()
    assert tokens.claims(token).user_id == 5
    expires_at = tokens.claims(token).expires_at.timestamp()
    time.sleep(max(0.0, expires_at - time.time()) + 0.05)
    with pytest.raises(InvalidToken):
        tokens.claims(token)
