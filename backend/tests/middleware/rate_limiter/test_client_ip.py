"""The client address the limiter keys anonymous requests by: socket peer and X-Forwarded-For."""

import pytest

from app.middleware.client_ip import ClientIP


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
