"""
Who is really asking: the peer address, or what a trusted proxy says.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

from twisted.web.iweb import IRequest


class ClientAddress:
    """
    Resolves the client IP of a request. C{X-Forwarded-For} is honoured
    only when the peer is a configured trusted proxy, and then read from
    the right, skipping further trusted hops: anything left of the first
    untrusted address was written by the client and proves nothing.
    """

    def __init__(self, trusted: Iterable[str] = ()) -> None:
        self._trusted: list[IPv4Network | IPv6Network] = [
            ip_network(t, strict=False) for t in trusted
        ]

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._trusted)

    def __call__(self, request: IRequest) -> str:
        peer = request.getClientAddress()
        host = getattr(peer, "host", None) or "unknown"
        if not self._trusted or not self._is_trusted(host):
            return host
        headers = request.requestHeaders.getRawHeaders(b"x-forwarded-for") or []
        hops = [
            h.strip()
            for line in headers
            for h in line.decode("latin-1").split(",")
            if h.strip()
        ]
        client = host
        for hop in reversed(hops):
            try:
                ip_address(hop)
            except ValueError:
                break
            client = hop
            if not self._is_trusted(hop):
                break
        return client
