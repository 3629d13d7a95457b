"""The client address of a request behind our own proxies (the ALB, then nginx on EB).

Every proxy appends the address it saw to X-Forwarded-For, so only the right-most entries were
written by proxies we trust; anything to their left is whatever the client sent. The rate limiter
keys clients by it, and the operator routes check it against OPS_ALLOWED_NETWORKS.
"""

import functools
import ipaddress
from collections.abc import Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@functools.lru_cache(maxsize=65_536)
def parse_address(address: str) -> IPAddress | None:
    """An address from a header or socket ("v4", "v4:port", "v6", "[v6]:port"); None if invalid."""
    text = address.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def network_key(ip: IPAddress) -> str:
    """The key of one client: the IPv4 address, or the IPv6 /64 (one subscriber's network)."""
    if ip.version == 6:
        return f"{ipaddress.IPv6Network((ip, 64), strict=False).network_address}/64"
    return str(ip)


class ClientIP:
    """The client address of a request, from its socket peer and X-Forwarded-For.

    Every proxy appends the address it saw, so only the right-most entries were written by our
    own proxies. With trusted CIDRs (like uvicorn's forwarded_allow_ips) the header is believed
    only from a trusted peer, and the client is the right-most entry outside those networks.
    Otherwise the client is the entry `trusted_hops` from the right; a header shorter than that
    yields its left-most entry (the farthest any proxy of ours vouched for).
    """

    def __init__(self, trusted_hops: int, trusted_networks: Sequence[str] = ()) -> None:
        self._hops = trusted_hops
        self._networks = tuple(ipaddress.ip_network(net, strict=False) for net in trusted_networks)
        self._trusted = functools.lru_cache(maxsize=4096)(self._is_trusted)

    def address(self, peer: str | None, forwarded_for: str | None) -> IPAddress | None:
        """The client's address: the chosen X-Forwarded-For entry, else the socket peer."""
        if forwarded_for and (self._hops or self._networks):
            entries = [entry for entry in forwarded_for.split(",") if entry.strip()]
            chosen = self._choose(peer, entries) if entries else None
            ip = parse_address(chosen) if chosen is not None else None
            if ip is not None:
                return ip
        return parse_address(peer) if peer is not None else None

    def __call__(self, peer: str | None, forwarded_for: str | None) -> str:
        """The rate-limit key of the client: its address, or its IPv6 /64 (see network_key)."""
        ip = self.address(peer, forwarded_for)
        if ip is not None:
            return network_key(ip)
        return peer if peer is not None else "unknown"

    def _choose(self, peer: str | None, entries: list[str]) -> str | None:
        if self._networks:
            if peer is None or not self._trusted(peer):
                return None
            for entry in reversed(entries):
                if not self._trusted(entry):
                    return entry
            return entries[0]
        return entries[-self._hops] if len(entries) >= self._hops else entries[0]

    def _is_trusted(self, address: str) -> bool:
        ip = parse_address(address)
        return ip is not None and any(
            ip.version == net.version and ip in net for net in self._networks
        )
