"""PasswordService: argon2 off the event loop with bounded concurrency and a bounded queue.

Real argon2 throughout. The "busy" cost below makes one hash take half a second or more on a
2-core machine (longer when it is loaded, never shorter), so a hash started by a test is still
running while the test's next few event-loop steps happen.
"""

import asyncio

import pytest
from argon2 import PasswordHasher
from prometheus_client import REGISTRY

from app.domain.auth import PasswordService
from app.errors import LoginOverloaded

FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
BUSY = PasswordHasher(time_cost=6, memory_cost=65536, parallelism=1)


def shed(reason: str) -> float:
    name = "hiringpro_password_hashes_shed_total"
    return REGISTRY.get_sample_value(name, {"reason": reason}) or 0.0


def gauge(name: str) -> float:
    return REGISTRY.get_sample_value(f"hiringpro_password_hashes_{name}") or 0.0


def service(
    hasher: PasswordHasher, *, queue_max: int = 1, wait_seconds: float = 60.0
) -> PasswordService:
    return PasswordService(hasher, concurrency=1, queue_max=queue_max, wait_seconds=wait_seconds)


async def test_hash_and_verify_and_the_unknown_account_path() -> None:
    passwords = service(FAST)
    try:
        stored = await passwords.hash("correct horse")
        assert await passwords.verify(stored, "correct horse") is True
        assert await passwords.verify(stored, "wrong horse") is False
        # An unknown account is checked against the dummy hash: never a match.
        assert await passwords.verify(None, "timing-equaliser") is False
    finally:
        passwords.close()


async def test_a_full_queue_sheds_at_once_for_every_caller() -> None:
    passwords = service(BUSY)
    try:
        stored = FAST.hash("pw")
        running = asyncio.create_task(passwords.hash("one"))
        waiting = asyncio.create_task(passwords.verify(stored, "pw"))
        await asyncio.sleep(0)  # both tasks took their place: one running, one queued
        before = shed("queue_full")
        with pytest.raises(LoginOverloaded) as refused:
            await passwords.hash("three")
        # The unknown-account path queues like any other, so it sheds alike.
        with pytest.raises(LoginOverloaded):
            await passwords.verify(None, "pw")
        assert shed("queue_full") - before == 2
        error = refused.value
        assert (error.status_code, error.code, error.headers) == (
            503,
            "login_overloaded",
            {"Retry-After": "1"},
        )
        assert (await running).startswith("$argon2id$")
        assert await waiting is True
        assert gauge("in_flight") + gauge("queued") == 0
    finally:
        passwords.close()


async def test_a_hash_still_waiting_after_the_wait_time_is_dropped() -> None:
    passwords = service(BUSY, wait_seconds=0.001)
    try:
        running = asyncio.create_task(passwords.hash("one"))
        await asyncio.sleep(0)
        before = shed("wait_timeout")
        with pytest.raises(LoginOverloaded):
            await passwords.hash("two")
        assert shed("wait_timeout") - before == 1
        # The running hash is waited for, whatever the wait time.
        assert (await running).startswith("$argon2id$")
        assert gauge("in_flight") + gauge("queued") == 0
    finally:
        passwords.close()


async def test_a_cancelled_caller_gives_its_place_in_the_queue_back() -> None:
    passwords = service(BUSY)
    try:
        running = asyncio.create_task(passwords.hash("one"))
        waiting = asyncio.create_task(passwords.hash("two"))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        # Its queued hash was dropped, so the queue has room again.
        before = shed("queue_full")
        replacement = asyncio.create_task(passwords.hash("three"))
        await asyncio.sleep(0)
        assert not replacement.done()
        assert shed("queue_full") == before
        assert (await running).startswith("$argon2id$")
        assert (await replacement).startswith("$argon2id$")
    finally:
        passwords.close()
