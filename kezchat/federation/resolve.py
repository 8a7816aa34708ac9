"""
Where another server is, and whether this one talks to it.

The base URL of domain D is C{https://D}; an operator overrides it with
C{--resolve D=URL} for private networks and tests. Plain C{http://} is
only ever used because such an override says so: discovery itself never
downgrades. The allow and deny lists are the operator's policy, checked
before any request leaves for another server.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from kezchat.errors import KezError
from kezchat.identity.handles import SERVER_RE
from kezchat.protocol.resolve import parse_override


def resolve_problem(entries: Iterable[str]) -> str | None:
    """
    Why C{entries} cannot be C{--resolve} values, or C{None}.
    """
    try:
        for entry in entries:
            parse_override(entry)
    except ValueError as e:
        return str(e)
    return None


def domain_list(flag: str, values: Iterable[str]) -> tuple[str, ...]:
    """
    Domains given to C{--<flag>}, lower-cased.

    @raise ValueError: one is not a domain name.
    """
    domains = []
    for value in values:
        domain = value.strip().lower()
        if not SERVER_RE.fullmatch(domain):
            raise ValueError(f"--{flag} {value!r} is not a domain name")
        domains.append(domain)
    return tuple(domains)


@dataclass(frozen=True)
class Resolver:
    """
    The base URLs of other servers and the operator's federation policy.
    """

    #: this server's own domain (never looked up remotely)
    own: str
    overrides: Mapping[str, str] = field(default_factory=dict)
    enabled: bool = True
    allow: frozenset[str] = frozenset()
    deny: frozenset[str] = frozenset()

    @classmethod
    def from_settings(
        cls,
        own: str,
        resolve: Iterable[str] = (),
        *,
        enabled: bool = True,
        allow: Iterable[str] = (),
        deny: Iterable[str] = (),
    ) -> Resolver:
        return cls(
            own,
            dict(parse_override(entry) for entry in resolve),
            enabled,
            frozenset(d.lower() for d in allow),
            frozenset(d.lower() for d in deny),
        )

    def base_url(self, domain: str) -> str:
        """
        Where C{domain}'s server answers: its override, else C{https://domain}.
        """
        domain = domain.lower()
        return self.overrides.get(domain, f"https://{domain}")

    def check(self, domain: str) -> None:
        """
        Refuse to talk to C{domain} unless federation is on and the lists
        allow it.

        @raise KezError: C{federation_disabled} (400) when federation is
            off, C{federation_refused} (403) for a domain on the deny list
            or off a non-empty allow list.
        """
        domain = domain.lower()
        if not self.enabled:
            raise KezError("federation_disabled", "this server does not talk to other servers")
        if domain in self.deny or (self.allow and domain not in self.allow):
            raise KezError(
                "federation_refused", f"this server's operator does not allow talking to {domain}"
            )
