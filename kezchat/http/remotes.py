"""
What the HTTP layer asks of federation: answers about other servers'
directories (L{kezchat.federation.remote.RemoteServers}), and the
C{?server=<domain>} parameter that names one.

Clients talk to their home server only (SPEC §11.5): a lookup by key, or
a consistency proof, of another domain's directory is asked of the home
server with C{server=<domain>}, and answered from that domain.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.web.iweb import IRequest

from kezchat.errors import KezError
from kezchat.identity.handles import SERVER_RE, Handle


class RemoteDirectory(Protocol):
    async def lookup(self, handle: Handle) -> dict[str, Any]: ...

    async def by_primary(self, domain: str, primary: str) -> dict[str, Any]: ...

    async def consistency(self, domain: str, first: int, second: int) -> dict[str, Any]: ...


def other_server(request: IRequest, own: str) -> str | None:
    """
    The domain named by C{?server=}, when it is not C{own}; else C{None}.

    @raise KezError: C{bad_request} when it is given twice or is no domain.
    """
    values = request.args.get(b"server") or []
    if not values:
        return None
    if len(values) > 1:
        raise KezError("bad_request", "give server once")
    try:
        domain = values[0].decode("utf-8").strip().lower()
    except UnicodeDecodeError:
        raise KezError("bad_request", "server is not UTF-8") from None
    if not SERVER_RE.fullmatch(domain):
        raise KezError("bad_request", "server must be a domain name")
    return None if domain == own else domain
