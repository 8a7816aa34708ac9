"""
Configuration of C{twistd kezsig}: flags and C{KEZ_SIG_*} environment
variables (SPEC §4), kept in one table because operators script against
the names.

This module imports nothing that installs a reactor: twistd loads it to
print C{--help} before any reactor is chosen.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from twisted.python import usage

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

    def __post_init__(self) -> None:
        if isinstance(self.max_chain_events, bool) or not isinstance(self.max_chain_events, int):
            raise ValueError("max_chain_events is a whole number")
        if self.max_chain_events < 1:
            raise ValueError("max_chain_events must be at least 1")

    @property
    def base_url(self) -> str:
        return (self.public_url or "").rstrip("/")


class SigOptions(usage.Options):
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

    optParameters = [
        [
            "db",
            None,
            None,
            "SQLite database file, or postgresql://user:pass@host:port/dbname"
            " ($KEZ_SIG_DB) [default: kez-sig.db]",
        ],
        [
            "public-url",
            None,
            None,
            "base URL clients reach this server at ($KEZ_SIG_PUBLIC_URL) [default: none]",
        ],
        [
            "max-chain-events",
            None,
            None,
            "events one sigchain may hold; an append past it is refused with 409 "
            f"($KEZ_SIG_MAX_CHAIN_EVENTS) [default: {DEFAULT_MAX_CHAIN_EVENTS}]",
        ],
    ]

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.environ = os.environ if environ is None else environ
        super().__init__()
        self["listen"] = []

    def opt_listen(self, value: str) -> None:
        """
        endpoint to serve HTTP on, repeatable: tcp:7878, ssl:8443:privateKey=…:certKey=…,
        systemd:domain=INET:index=0 ($KEZ_SIG_LISTEN, space-separated) [default: tcp:7878]
        """
        self["listen"].append(value)

    def _setting(self, flag: str, env: str) -> str | None:
        return self[flag] or self.environ.get(env) or None

    def postOptions(self) -> None:
        listen = self["listen"] or self.environ.get("KEZ_SIG_LISTEN", "").split()
        public_url = self._setting("public-url", "KEZ_SIG_PUBLIC_URL")
        if public_url is not None and not public_url.startswith(("http://", "https://")):
            raise usage.UsageError("--public-url must be an http:// or https:// URL")
        check_db_setting(self._setting("db", "KEZ_SIG_DB") or "")
        max_events = self._setting("max-chain-events", "KEZ_SIG_MAX_CHAIN_EVENTS")
        if max_events is None:
            max_chain_events = DEFAULT_MAX_CHAIN_EVENTS
        else:
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
            listen=tuple(listen) or DEFAULT_LISTEN,
            db=self._setting("db", "KEZ_SIG_DB") or "kez-sig.db",
            public_url=public_url,
            max_chain_events=max_chain_events,
        )
