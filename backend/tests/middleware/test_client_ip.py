"""One client-address parser for its three consumers, each tried through the app's routes.

The rate limiter (its bucket key), the operator allowlist (/health/detailed) and the worker
routes' loopback check read the socket peer and every X-Forwarded-For line the same way:
several header lines are one list, only entries written by our own proxies are believed,
IPv6 forms are normalised and an entry that is no address never becomes the proxy's address.
"""

from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config.rate_limits import DEFAULT_TIERS, RateLimitTier
from app.middleware.client_ip import ClientIP
from app.worker_app import create_worker_app
from tests.conftest import make_settings
from tests.support.apps import AppFactory, client_for

# EB: the ALB (in the VPC) appends the client, nginx on the instance appends the ALB.
BY_COUNT: dict[str, Any] = {"trusted_proxy_count": 2}
BY_NETWORKS: dict[str, Any] = {"trusted_proxy_cidrs": ["127.0.0.1/32", "10.0.0.0/8"]}
PROXIES = pytest.mark.parametrize("proxies", [BY_COUNT, BY_NETWORKS], ids=["count", "cidrs"])

Lines = list[str]


def forwarded(*lines: str) -> list[tuple[str, str]]:
    """Headers with one X-Forwarded-For line per argument, in order."""
    return [("X-Forwarded-For", line) for line in lines]


# X-Forwarded-For lines as nginx (peer 127.0.0.1) relays them, and the client they name.
CLIENT = "203.0.113.7"
SAME_CLIENT: list[Lines] = [
    [f"{CLIENT}, 10.0.3.4"],
    # Several lines are one list: the client is not in the first line nor the last.
    ["6.6.6.6", CLIENT, "10.0.3.4"],
    # Spoofed entries on the left (a forged loopback, a forged VPC address) are the client's own.
    ["127.0.0.1, 10.9.9.9", f"{CLIENT}, 10.0.3.4"],
    [f"::ffff:{CLIENT}", "10.0.3.4"],
    [f"{CLIENT}:51234, 10.0.3.4"],
]
OTHER_CLIENT: list[Lines] = [
    # The allowlisted address claimed on the left, in the same line or an earlier one.
    [f"{CLIENT}, 198.51.100.9, 10.0.3.4"],
    [CLIENT, "198.51.100.9, 10.0.3.4"],
    ["2001:db8::7, 10.0.3.4"],
]
UNKNOWN_CLIENT: list[Lines] = [
    # The entry our proxy would have written is no address: unknown, never the proxy itself.
    ["not-an-ip, 10.0.3.4"],
    [CLIENT, "[::1, 10.0.3.4"],
]


@PROXIES
async def test_ops_allowlist_reads_every_forwarded_line(
    app_with: AppFactory, proxies: dict[str, Any]
) -> None:
    async with (
        app_with(ops_allowed_networks=f"{CLIENT}/32,127.0.0.1/32,::1/128", **proxies) as app,
        client_for(app) as nginx,
    ):
        for lines in SAME_CLIENT:
            response = await nginx.get("/health/detailed", headers=forwarded(*lines))
            assert response.status_code == 200, lines
        for lines in OTHER_CLIENT + UNKNOWN_CLIENT:
            response = await nginx.get("/health/detailed", headers=forwarded(*lines))
            assert response.status_code == 403, lines
            assert response.json()["error"]["code"] == "forbidden"


@PROXIES
async def test_ops_allowlist_matches_ipv6_clients_in_any_form(
    app_with: AppFactory, proxies: dict[str, Any]
) -> None:
    async with (
        app_with(ops_allowed_networks="2001:db8::/32", **proxies) as app,
        client_for(app) as nginx,
    ):
        for entry in ("2001:db8::7", "[2001:db8::7]:443", "2001:DB8:0:0:0:0:0:7"):
            response = await nginx.get("/health/detailed", headers=forwarded(f"{entry}, 10.0.3.4"))
            assert response.status_code == 200, entry
        # The loopback nginx itself is not in this allowlist, whatever the header says.
        response = await nginx.get("/health/detailed", headers=forwarded("garbage, 10.0.3.4"))
        assert response.status_code == 403


async def test_ops_allowlist_ignores_the_header_from_an_untrusted_peer(
    app_with: AppFactory,
) -> None:
    async with (
        app_with(ops_allowed_networks=f"{CLIENT}/32", **BY_NETWORKS) as app,
        client_for(app, "198.51.100.3") as outsider,
    ):
        response = await outsider.get("/health/detailed", headers=forwarded(CLIENT))
    assert response.status_code == 403


@PROXIES
async def test_rate_limiter_keys_clients_by_the_same_parser(
    app_with: AppFactory, proxies: dict[str, Any]
) -> None:
    """One token per client: a second request from the same client, however its header lines
    are written, is refused; another client still has its token."""
    tiers = {**DEFAULT_TIERS, "read": RateLimitTier(capacity=1, refill=1, period_seconds=3600)}
    async with (
        app_with(rate_limit_enabled=True, rate_limit_tiers=tiers, **proxies) as app,
        client_for(app) as nginx,
    ):

        async def status(lines: Lines) -> int:
            return (await nginx.get("/api/jobs", headers=forwarded(*lines))).status_code

        assert await status(SAME_CLIENT[0]) == 200
        for lines in SAME_CLIENT[1:]:
            assert await status(lines) == 429, lines
        # A forged left entry does not take another client's token, nor spend its own.
        assert await status(OTHER_CLIENT[0]) == 200
        assert await status(OTHER_CLIENT[1]) == 429
        # IPv6 clients share a bucket per /64, whatever the form of the address.
        assert await status(OTHER_CLIENT[2]) == 200
        assert await status(["[2001:db8::9]:443, 10.0.3.4"]) == 429
        # Unknown clients share one bucket among themselves, apart from the real clients.
        assert await status(UNKNOWN_CLIENT[0]) == 200
        assert await status(UNKNOWN_CLIENT[1]) == 429
        assert await status(["192.0.2.44, 10.0.3.4"]) == 200


LOCAL_DELIVERIES: list[list[tuple[str, str]]] = [
    [],
    forwarded("127.0.0.1"),
    forwarded("127.0.0.1", "::1"),
    forwarded("[::1]:8080, ::ffff:127.0.0.1"),
    [*forwarded("127.0.0.1"), ("X-Real-IP", "127.0.0.1")],
]
REMOTE_DELIVERIES: list[list[tuple[str, str]]] = [
    forwarded("10.0.0.8"),
    # A forged loopback entry on the left, in the same line or an earlier one: with
    # TRUSTED_PROXY_COUNT=2 the web app would take 127.0.0.1 as the client here.
    forwarded("127.0.0.1, 10.0.0.8"),
    forwarded("127.0.0.1", "10.0.0.8"),
    forwarded("127.0.0.1", "2001:db8::7"),
    forwarded("127.0.0.1, garbage"),
    forwarded("127.0.0.1", "127.0.0.1, 0.0.0.0"),
    [*forwarded("127.0.0.1"), ("X-Real-IP", "10.0.0.8")],
    [*forwarded("127.0.0.1"), ("X-Real-IP", "127.0.0.1"), ("X-Real-IP", "10.0.0.8")],
]


@PROXIES
async def test_worker_routes_accept_only_all_loopback_hops(
    tmp_path: Path, proxies: dict[str, Any]
) -> None:
    """sqsd on the instance, through nginx: every hop loopback, whatever TRUSTED_PROXY_* say
    (they describe the web tier). Past the check a request without a message id is a 400."""
    app = create_worker_app(make_settings(tmp_path, **proxies))

    async def status(peer: str, headers: list[tuple[str, str]]) -> int:
        transport = httpx.ASGITransport(app=app, client=(peer, 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
            response = await client.post(
                "/worker/email", content=b"{}", headers=[*headers, ("User-Agent", "aws-sqsd/3.0.4")]
            )
            return response.status_code

    for headers in LOCAL_DELIVERIES:
        assert await status("127.0.0.1", headers) == 400, headers
    assert await status("::1", forwarded("::1")) == 400
    for headers in REMOTE_DELIVERIES:
        assert await status("127.0.0.1", headers) == 403, headers
    for peer in ("10.0.0.8", "2001:db8::7", "::ffff:10.0.0.8"):
        assert await status(peer, forwarded("127.0.0.1")) == 403, peer


@pytest.mark.parametrize(
    ("parser", "peer", "header"),
    [
        (ClientIP(2), "127.0.0.1", "203.0.113.7, not-an-ip, 10.0.3.4"),
        (ClientIP(1), "127.0.0.1", "203.0.113.7, [::1"),
        (ClientIP(0, ["127.0.0.1/32"]), "127.0.0.1", "203.0.113.7, 999.1.1.1"),
        (ClientIP(0), "not-an-ip", None),
    ],
)
def test_an_unusable_chosen_entry_is_an_unknown_client(
    parser: ClientIP, peer: str, header: str | None
) -> None:
    assert parser.address(peer, header) is None
