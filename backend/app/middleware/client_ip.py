"""The client address of a request behind our own proxies (the ALB, then nginx on EB).

Every proxy appends the address it saw to X-Forwarded-For, so only the right-most entries were
written by proxies we trust; anything to their left is whatever the client sent. This is the one
parser of client addresses: the rate limiter keys clients by it, the operator routes check it
against OPS_ALLOWED_NETWORKS, and the worker routes check that it is loopback.
"""

import functools
import ipaddress
from collections.abc import Iterable, Sequence

from starlette.types import Scope

from app.config import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Headers = Iterable[tuple[bytes, bytes]]


@functools.lru_cache(maxsize=65_536)
def parse_address(address: str) -> IPAddress | None:
    """An address from a header or socket ("v4", "v4:port", "v6", "[v6]:port"); None if invalid."""
    text = address.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        text = text[1:end]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def header_lines(headers: Headers, name: bytes) -> str | None:
    """Every line of header `name` (lower case) joined with commas in order; None when absent.

    A request may carry a list header several times and proxies read the lines as one list
    (RFC 9110, section 5.3), so reading only one line would let a client hide entries.
    """
    lines = [value for key, value in headers if key == name]
    return b",".join(lines).decode("latin-1") if lines else None


def forwarded_for(headers: Headers) -> str | None:
    """The request's X-Forwarded-For: all of its lines, joined in order."""
    return header_lines(headers, b"x-forwarded-for")


def peer_of(scope: Scope) -> str | None:
    """The socket peer's host of an ASGI connection scope, if the server gave one."""
    client = scope.get("client")
    return str(client[0]) if client else None


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
    yields its left-most entry (the farthest any proxy of ours vouched for). A chosen entry that
    is not an address makes the client unknown (None), never the proxy's own address.
    """

    def __init__(self, trusted_hops: int, trusted_networks: Sequence[str] = ()) -> None:
        self._hops = trusted_hops
        self._networks = tuple(ipaddress.ip_network(net, strict=False) for net in trusted_networks)
        self._trusted = functools.lru_cache(maxsize=4096)(self._is_trusted)

    def address(self, peer: str | None, forwarded_for: str | None) -> IPAddress | None:
        """The client's address: the chosen X-Forwarded-For entry, else the socket peer.

        None when the client cannot be known: an unusable peer, or a chosen entry that is no
        address (falling back to the peer would make such a client look like our proxy).
        """
        if forwarded_for and (self._hops or self._networks):
            entries = [entry for entry in forwarded_for.split(",") if entry.strip()]
            if entries and (not self._networks or (peer is not None and self._trusted(peer))):
                return parse_address(self._choose(entries))
        return parse_address(peer) if peer is not None else None

    def of_scope(self, scope: Scope) -> IPAddress | None:
        """The client's address of an ASGI request (socket peer, every X-Forwarded-For line)."""
        return self.address(peer_of(scope), forwarded_for(scope["headers"]))

    def __call__(self, peer: str | None, forwarded_for: str | None) -> str:
        """The rate-limit key of the client: its address, or its IPv6 /64 (see network_key)."""
        ip = self.address(peer, forwarded_for)
        if ip is not None:
            return network_key(ip)
        return peer if peer is not None else "unknown"

    def _choose(self, entries: list[str]) -> str:
        if self._networks:
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


@functools.lru_cache(maxsize=16)
def _client_ip(trusted_hops: int, trusted_networks: tuple[str, ...]) -> ClientIP:
    return ClientIP(trusted_hops, trusted_networks)


def client_ip_for(settings: Settings) -> ClientIP:
    """The parser for the web app's proxies: TRUSTED_PROXY_COUNT or TRUSTED_PROXY_CIDRS."""
    return _client_ip(settings.trusted_proxy_count, tuple(settings.trusted_proxy_cidrs))


def client_address(scope: Scope, settings: Settings) -> IPAddress | None:
    """The client address of an ASGI request behind the web app's proxies; None if unknown."""
    return client_ip_for(settings).of_scope(scope)


# The worker tier's only proxy is nginx on the instance: whatever TRUSTED_PROXY_* say (they
# describe the web tier's ALB), a worker request is local only when every hop is loopback.
_LOOPBACK = ClientIP(0, ("127.0.0.0/8", "::1/128"))


def is_local_request(scope: Scope) -> bool:
    """Whether the request comes from this host: the peer, every X-Forwarded-For entry and
    X-Real-IP (when sent) are loopback addresses."""
    ip = _LOOPBACK.of_scope(scope)
    if ip is None or not ip.is_loopback:
        return False
    real_ip = header_lines(scope["headers"], b"x-real-ip")
    if real_ip is None:
        return True
    hops = [parse_address(hop) for hop in real_ip.split(",")]
    return all(hop is not None and hop.is_loopback for hop in hops)
