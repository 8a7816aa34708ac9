"""
C{--resolve DOMAIN=URL}: where a domain's chat server is when it is not
at C{https://DOMAIN} (SPEC §11.5), parsed the same way by the server and
the CLI. Plain C{http://} is only ever used because such an entry says so.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from kezchat.identity.handles import SERVER_RE


def parse_override(entry: str) -> tuple[str, str]:
    """
    One C{DOMAIN=URL} as (domain, base URL without trailing slash).

    @raise ValueError: it is not one.
    """
    domain, sep, url = entry.partition("=")
    domain = domain.strip().lower()
    url = url.strip().rstrip("/")
    if not sep or not SERVER_RE.fullmatch(domain):
        raise ValueError(f"--resolve {entry!r} is not DOMAIN=URL")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"--resolve {entry!r}: the URL must be http(s)://host[:port][/path]")
    return domain, url


def parse_overrides(entries: Iterable[str]) -> dict[str, str]:
    """
    C{--resolve} values as C{{domain: base URL}}.

    @raise ValueError: one is not C{DOMAIN=URL}.
    """
    return dict(parse_override(entry) for entry in entries)
