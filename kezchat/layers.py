"""
The floors of kezchat, as one table: which modules stand on which floor,
and which floors each may import from.

The table is the architecture docs/architecture.md draws, written as data
so that C{tests/test_layers.py} can hold every module's imports against
it: an import from a floor to one it may not use (in practice, one above
it) fails the suite. A module is placed by the longest prefix of its
dotted name that the table names.

The folders follow the floors: the top-level modules of C{kezchat} are the
ground's helpers, and every other floor is its packages (C{server/} is the
composition, C{tools/} the operator tools). The exceptions are named here
by their longer prefixes: C{sigserver/}, the second server, keeps its own
floors together in one folder, and C{keylog/log} and C{natsbridge/service}
stand above the rest of their packages.

Nothing imports this module at run time; it is the map, not the house.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Floor:
    """
    One floor: its height (0 is the ground), the module prefixes on it,
    and the floors whose modules its modules may import (besides their
    own floor's).
    """

    name: str
    height: int
    modules: tuple[str, ...]
    may_import: frozenset[str]
    why: str


_GROUND = frozenset({"ground"})
_WIRE = _GROUND | {"wire"}

#: every floor, ground first
FLOORS: tuple[Floor, ...] = (
    Floor(
        "ground",
        0,
        (
            "kezchat",
            "kezchat.compat",
            "kezchat.errors",
            "kezchat.strictjson",
            "kezchat.timeutil",
            "kezchat.metrics",
            "kezchat.sigserver.metrics",
            "kezchat.reactor",
            "kezchat.startup",
            "kezchat.tempfiles",
            "kezchat.ratelimit",
            "kezchat.layers",
        ),
        frozenset(),
        "helpers every part may use, and the quarantine of Twisted's private API and of asyncio",
    ),
    Floor(
        "wire",
        1,
        (
            "kezchat.protocol",
            "kezchat.identity",
            "kezchat.sigchain",
            "kezchat.e2e",
            "kezchat.manifests",
            "kezchat.keylog",
            "kezchat.openapi",
        ),
        _GROUND,
        "pure rules and data both servers and every client share: keys, signed texts, "
        "subjects, envelopes, sigchains, manifests, the key log's hashing, the OpenAPI documents",
    ),
    Floor(
        "clients",
        2,
        ("kezchat.client", "kezchat.p2p", "kezchat.testing"),
        _WIRE,
        "speaking to a server (HTTP over treq, NATS) and to a peer (Iroh); "
        "the fixtures tests and benchmarks share",
    ),
    Floor(
        "storage",
        3,
        ("kezchat.storage", "kezchat.sigserver.store", "kezchat.sigserver.postgres"),
        _WIRE,
        "the storage protocols and their SQLite and PostgreSQL implementations",
    ),
    Floor(
        "domain",
        4,
        (
            "kezchat.registry",
            "kezchat.relay",
            "kezchat.federation",
            "kezchat.keylog.log",
            "kezchat.sigserver.sigchains",
            "kezchat.sigserver.storage",
        ),
        _WIRE | {"clients", "storage"},
        "what the servers do, over the storage protocols, knowing nothing of the HTTP server",
    ),
    Floor(
        "transports",
        5,
        ("kezchat.http", "kezchat.natsbridge", "kezchat.sigserver.http"),
        _WIRE | {"clients", "storage", "domain"},
        "HTTP (Klein routes, SSE) and NATS in front of the domain",
    ),
    Floor(
        "composition",
        6,
        (
            "kezchat.server",
            "kezchat.natsbridge.service",
            "kezchat.sigserver",
        ),
        _WIRE | {"clients", "storage", "domain", "transports"},
        "options, and building every part whole in dependency order",
    ),
    Floor(
        "tools",
        7,
        ("kezchat.tools",),
        _WIRE | {"clients", "storage", "domain", "transports", "composition"},
        "operator commands run beside a server (kezchat-admin, migration, backup, audits)",
    ),
    Floor(
        "apps",
        7,
        ("kezchat.cli",),
        _WIRE | {"clients"},
        "the kez-chat command-line client: a client, so nothing of the servers",
    ),
)

#: the floor of each name in the table
BY_NAME = {floor.name: floor for floor in FLOORS}

#: the only parts of C{twisted.web} the domain floor may import: the
#: outbound HTTP client API (treq's Agent and Headers), never the server side
DOMAIN_TWISTED_WEB = frozenset(
    {"twisted.web.client", "twisted.web.http_headers", "twisted.web.iweb"}
)


#: the one package below the transports that may touch the HTTP server's
#: internals: the quarantine of Twisted's private API
TWISTED_WEB_QUARANTINE = "kezchat.compat"


def floor_of(module: str) -> Floor:
    """
    The floor of C{module} (a dotted name under C{kezchat}): the one whose
    prefix matches the longest part of its name.

    @raise LookupError: no floor names it, not even C{kezchat}.
    """
    best: tuple[int, Floor] | None = None
    for floor in FLOORS:
        for prefix in floor.modules:
            matches = module == prefix or module.startswith(prefix + ".")
            if matches and (best is None or len(prefix) > best[0]):
                best = (len(prefix), floor)
    if best is None:
        raise LookupError(f"{module} is on no floor")
    return best[1]


def allowed(importer: str, imported: str) -> bool:
    """
    Whether module C{importer} may import module C{imported} (both under
    C{kezchat}).
    """
    a, b = floor_of(importer), floor_of(imported)
    return a is b or b.name in a.may_import
