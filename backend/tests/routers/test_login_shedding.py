"""A login burst on the real app: beyond the hash threads and their queue, logins and
registrations are shed at once with 503 login_overloaded and Retry-After, while requests that
carry a token keep being served."""

import asyncio

import httpx

from tests.support.apps import AppFactory, client_for
from tests.support.factories import PASSWORD, auth, register_candidate
from tests.support.wait import wait_until

# One hash thread and one waiting hash per process; an argon2 cost that keeps a hash running for
# half a second or more (never less on a loaded machine), so a burst arriving together overflows.
SHEDDING = {
    "password_hash_concurrency": 1,
    "password_hash_queue_max": 1,
    "password_hash_wait_seconds": 60.0,
    "password_hash_time_cost": 6,
    "password_hash_memory_kib": 65536,
}
BURST_TIMEOUT = 120.0


def burst(http: httpx.AsyncClient, email: str) -> list[asyncio.Task[httpx.Response]]:
    """Logins (an existing account, an unknown one) and registrations, all at once."""
    requests = [
        *(("/api/auth/login", {"email": email, "password": PASSWORD}) for _ in range(3)),
        *(
            ("/api/auth/login", {"email": f"nobody{n}@example.com", "password": PASSWORD})
            for n in range(3)
        ),
        *(
            (
                "/api/auth/register",
                {"email": f"new{n}@example.com", "password": PASSWORD, "full_name": "New"},
            )
            for n in range(2)
        ),
    ]
    return [asyncio.create_task(http.post(path, json=body)) for path, body in requests]


async def test_a_login_burst_is_shed_while_token_bearing_requests_go_on(
    app_with: AppFactory,
) -> None:
    async with app_with(**SHEDDING) as app, client_for(app, timeout=BURST_TIMEOUT) as http:
        account = await register_candidate(http)
        token = account["access_token"]
        logins = burst(http, account["user"]["email"])

        async def first_shed() -> bool:
            return any(task.done() and task.result().status_code == 503 for task in logins)

        await wait_until(first_shed, within=BURST_TIMEOUT, what="a login to be shed")
        # Hashes are still running and queued: the burst has not drained.
        assert not all(task.done() for task in logins)
        reads = await asyncio.gather(
            *(http.get("/api/profile", headers=auth(token)) for _ in range(5))
        )
        assert [read.status_code for read in reads] == [200] * 5
        answers = await asyncio.gather(*logins)

    shed = [answer for answer in answers if answer.status_code == 503]
    served = [answer for answer in answers if answer.status_code != 503]
    assert shed and served
    for answer in shed:
        assert answer.headers["Retry-After"] == "1"
        assert answer.json()["error"]["code"] == "login_overloaded"
    # Whatever was admitted got its ordinary answer.
    assert {answer.status_code for answer in served} <= {200, 201, 401}
