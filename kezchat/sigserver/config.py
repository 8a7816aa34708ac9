"""
Configuration of C{twistd kezsig}: flags and C{KEZ_SIG_*} environment
variables (SPEC §4), kept in one table because operators script against
the names.

This module imports nothing but Twisted's option parser (and
L{kezchat.server.options}, which imports nothing else): twistd loads it
to print C{--help} before any reactor is chosen.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.python import usage

from kezchat.server.options import TableOptions, parameters, parse_switch
from kezchat.storage.dburl import check_db_setting

DEFAULT_LISTEN = ("tcp:7878",)

#: the default cap on events per chain (matches
#: L{kezchat.sigserver.sigchains.DEFAULT_MAX_EVENTS}; not imported from there,
#: because this module must import nothing but the option parser)
DEFAULT_MAX_CHAIN_EVENTS = 10_000


@dataclass(frozen=True)
class SigConfig:
    """
    Everything L{kezchat.sigserver.service.makeService} needs; tests and
    embedders build one directly.

    @ivar public_url: the base URL clients reach this server at, used for
        C{Location} headers and reported by C{/v1/healthz}; C{None} when
        only relative locations can be given.
    """

    listen: tuple[str, ...] = DEFAULT_LISTEN
    db: str = "kez-sig.db"
    public_url: str | None = None
    #: events one chain may hold (an append past it is 409 C{chain_too_long})
    max_chain_events: int = DEFAULT_MAX_CHAIN_EVENTS
    #: a log line per request (off by default, as for kezchat: it costs
    #: throughput and fills logs)
    access_log: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.max_chain_events, bool) or not isinstance(self.max_chain_events, int):
            raise ValueError("max_chain_events is a whole number")
        if self.max_chain_events < 1:
            raise ValueError("max_chain_events must be at least 1")

    @property
    def base_url(self) -> str:
        return (self.public_url or "").rstrip("/")


class SigOptions(TableOptions):
    """
    C{twistd kezsig} options. A flag given on the command line wins over
    its environment variable.
    """

    synopsis = "[options]"
    longdesc = (
        "Run the KEZ sigchain server: append-only logs of events signed by "
        "ed25519 keys (SPEC §7). Every option can also be set by the "
        "environment variable named in brackets."
    )

    table = [
        ("db", "KEZ_SIG_DB", "kez-sig.db", "SQLite database file, or postgresql://user:pass@host:port/dbname"),
        ("public-url", "KEZ_SIG_PUBLIC_URL", None, "base URL clients reach this server at"),
        (
            "max-chain-events",
            "KEZ_SIG_MAX_CHAIN_EVENTS",
            str(DEFAULT_MAX_CHAIN_EVENTS),
            "events one sigchain may hold; an append past it is refused with 409",
        ),
        (
            "access-log",
            "KEZ_SIG_ACCESS_LOG",
            "off",
            "a log line per HTTP request: on or off",
        ),
    ]

    repeatable = [
        (
            "listen",
            "KEZ_SIG_LISTEN",
            list(DEFAULT_LISTEN),
            "endpoint to serve HTTP on, repeatable: tcp:7878, ssl:8443:privateKey=…:certKey=…, "
            "systemd:domain=INET:index=0",
        ),
    ]

    optParameters = parameters(table)

    def opt_listen(self, value: str) -> None:
        self["listen"].append(value)

    opt_listen.__doc__ = (
        repeatable[0][3] + " ($KEZ_SIG_LISTEN, space-separated) [default: tcp:7878]"
    )

    def postOptions(self) -> None:
        settings = self.settings()
        public_url = settings["public-url"]
        if public_url is not None and not public_url.startswith(("http://", "https://")):
            raise usage.UsageError("--public-url must be an http:// or https:// URL")
        check_db_setting(settings["db"] or "")
        max_events = settings["max-chain-events"] or ""
        try:
            max_chain_events = int(max_events)
        except ValueError:
            raise usage.UsageError(
                f"--max-chain-events takes a whole number, not {max_events!r}"
            ) from None
        if max_chain_events < 1:
            raise usage.UsageError(
                f"--max-chain-events must be at least 1, not {max_chain_events}"
            )
        self.config = SigConfig(
            listen=tuple(self["listen"]),
            db=settings["db"] or "kez-sig.db",
            public_url=public_url,
            max_chain_events=max_chain_events,
            access_log=parse_switch("access-log", settings["access-log"]),
        )
