"""
Configuration of the chat-server: one L{ChatConfig}, built from command-line
flags and C{KEZ_CHAT_*} environment variables (SPEC §4).

The flag and variable names are an interface operators script against
(systemd units, compose files), so they live in one table here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from ipaddress import ip_network
from urllib.parse import urlsplit

from twisted.python import usage

from kezchat.identity.handles import SERVER_RE
from kezchat.server.options import TableOptions, parameters, parse_switch
from kezchat.storage.dburl import check_db_setting

#: seconds over which C{send_limit} and C{register_limit} count (their
#: flags say "per minute" and "per hour")
SEND_LIMIT_WINDOW = 60.0
REGISTER_LIMIT_WINDOW = 3600.0


@dataclass(frozen=True)
class ChatConfig:
    """
    Everything C{makeService} needs. Tests and embedders build one directly.
    """

    listen: tuple[str, ...] = ("tcp:6969",)
    db: str = "kez-chat.db"
    server: str = "kez.lat"
    public_url: str | None = None
    #: unset: records carry no C{sigchain_url} (none is advertised that is not served)
    sig_server_url: str | None = None
    web_dir: str | None = None
    nats_url: str | None = None
    nats_seed: str | None = None
    #: the NATS WebSocket URL browsers connect to (C{ws://} or C{wss://}),
    #: advertised in healthz as C{nats_ws} when NATS is configured; unset:
    #: the web app stays on SSE
    nats_ws_url: str | None = None
    callout_issuer_seed: str | None = None
    retention_days: float = 30.0
    retention_bytes: int = 256 * 1024 * 1024
    trusted_proxies: tuple[str, ...] = ()
    register_limit: int = 20
    send_limit: int = 600
    log_format: str = "text"
    access_log: bool = False
    #: start even if the database was recorded for another C{server}
    allow_server_change: bool = False
    #: seconds between retention sweeps and between SSE keep-alive pings
    retention_sweep_seconds: float = 600.0
    sse_ping_seconds: float = 15.0
    #: open SSE streams allowed per handle and per client IP (429 past
    #: them); 0 = no cap
    max_streams_per_handle: int = 32
    max_streams_per_ip: int = 256
    #: total bytes the KEZ_INBOX JetStream stream keeps (oldest dropped first)
    nats_stream_max_bytes: int = 1024**3
    #: also accept X-KEZ-Auth signatures that do not name this server
    legacy_auth: bool = True
    #: C{DOMAIN=URL} overrides of the base URL C{https://DOMAIN} of other servers
    resolve: tuple[str, ...] = ()
    #: talk to other servers at all (remote lookups, server-to-server requests)
    federation: bool = True
    #: when non-empty, the only other domains this server talks to
    federation_allow: tuple[str, ...] = ()
    #: other domains this server never talks to
    federation_deny: tuple[str, ...] = ()
    #: messages each other server may deliver here per minute; 0 = off
    federation_limit: int = 6000
    #: messages queued for one other server at most; 0 = no cap
    federation_queue_limit: int = 10000

    def __post_init__(self) -> None:
        # the invariants the flags are checked against, for embedders too
        from kezchat.federation.resolve import resolve_problem

        problem = (
            retention_days_problem(self.retention_days)
            or retention_bytes_problem(self.retention_bytes)
            or resolve_problem(self.resolve)
        )
        if problem is not None:
            raise ValueError(problem)

    @property
    def base_url(self) -> str:
        """
        The base URL clients see, without a trailing slash.
        """
        return (self.public_url or f"https://{self.server}").rstrip("/")

    @property
    def sig_base_url(self) -> str | None:
        return self.sig_server_url.rstrip("/") if self.sig_server_url else None


#: a retention longer than this is a typo (and overflows NATS's max_age)
MAX_RETENTION_DAYS = 36500.0


def retention_days_problem(days: float) -> str | None:
    """
    Why C{days} cannot be a retention period, or C{None}: it must be a
    finite number of days above zero (zero would drop every message as it
    arrives).
    """
    if not isinstance(days, (int, float)) or isinstance(days, bool):
        return "--retention-days takes a number of days"
    if math.isnan(days) or not 0 < days <= MAX_RETENTION_DAYS:
        return f"--retention-days must be above 0 and at most {MAX_RETENTION_DAYS:g}, not {days}"
    return None


def retention_bytes_problem(size: int) -> str | None:
    """
    Why C{size} cannot be a per-recipient byte cap, or C{None}: a whole
    number above zero (zero would drop every message as it arrives).
    """
    if not isinstance(size, int) or isinstance(size, bool):
        return "--retention-bytes takes a whole number of bytes"
    if size <= 0:
        return f"--retention-bytes must be above 0, not {size}"
    return None


def nats_ws_url_problem(url: str | None) -> str | None:
    """
    Why C{url} cannot be advertised as the NATS WebSocket URL, or C{None}:
    browsers take only C{ws://} and C{wss://} URLs with a host, and the
    URL goes into healthz and the web app's content security policy as is.
    """
    if not url:
        return None
    parsed = urlsplit(url)
    if parsed.scheme not in ("ws", "wss") or not parsed.hostname:
        return f"--nats-ws-url {url!r} is not a ws:// or wss:// URL with a host"
    if any(c in url for c in " ;,'\"") or parsed.query or parsed.fragment:
        return f"--nats-ws-url {url!r} may not contain spaces, quotes, ; , ? or #"
    return None


def _positive_int(name: str, value: str | None) -> int:
    try:
        number = int(value or "")
    except ValueError:
        raise usage.UsageError(f"--{name} takes a whole number, not {value!r}") from None
    if number < 0:
        raise usage.UsageError(f"--{name} cannot be negative")
    return number


class ChatOptions(TableOptions):
    """
    C{twistd kezchat} options. Every option also reads an environment
    variable; a flag given on the command line wins over the variable.
    """

    synopsis = "[options]"
    longdesc = (
        "Run the KEZ chat home server: handle registry, WebFinger, message relay "
        "(HTTP + SSE), the web app, and optionally the NATS auth callout and bridge. "
        "Every option can also be set by the environment variable named in brackets."
    )

    #: (flag, environment variable, default, help)
    table = [
        (
            "db",
            "KEZ_CHAT_DB",
            "kez-chat.db",
            "SQLite database file, or postgresql://user:pass@host:port/dbname",
        ),
        ("server", "KEZ_CHAT_SERVER", "kez.lat", "home server domain (the part after @)"),
        ("public-url", "KEZ_CHAT_PUBLIC_URL", None, "base URL clients see [https://<server>]"),
        (
            "sig-server-url",
            "KEZ_CHAT_SIG_SERVER_URL",
            None,
            "public base URL of the kezsig sigchain server [unset: no sigchain_url in records]",
        ),
        ("web-dir", "KEZ_CHAT_WEB_DIR", None, "directory of the built web app [the packaged one]"),
        ("nats-url", "NATS_URL", None, "NATS server URL; unset: no NATS"),
        ("nats-seed", "KEZ_CHAT_NATS_SEED", None, "file: the callout service's user nkey seed"),
        (
            "nats-ws-url",
            "KEZ_CHAT_NATS_WS_URL",
            None,
            "NATS WebSocket URL the web app connects to (ws:// or wss://); unset: SSE only",
        ),
        (
            "callout-issuer-seed",
            "KEZ_CHAT_CALLOUT_ISSUER_SEED",
            None,
            "file: the account seed that signs authorization responses",
        ),
        ("retention-days", "KEZ_CHAT_RETENTION_DAYS", "30", "days a message is kept"),
        (
            "retention-bytes",
            "KEZ_CHAT_RETENTION_BYTES",
            str(256 * 1024 * 1024),
            "bytes of stored messages kept per recipient",
        ),
        (
            "register-limit",
            "KEZ_CHAT_REGISTER_LIMIT",
            "20",
            "registrations per client IP per hour; 0 = off",
        ),
        ("send-limit", "KEZ_CHAT_SEND_LIMIT", "600", "messages per sender per minute; 0 = off"),
        ("log-format", "KEZ_CHAT_LOG_FORMAT", "text", "text or json"),
        (
            "access-log",
            "KEZ_CHAT_ACCESS_LOG",
            "off",
            "a log line per HTTP request: on or off (on costs ~40% of relay throughput)",
        ),
        (
            "max-streams-per-handle",
            "KEZ_CHAT_MAX_STREAMS_PER_HANDLE",
            "32",
            "open SSE streams per handle; more get 429; 0 = no cap",
        ),
        (
            "max-streams-per-ip",
            "KEZ_CHAT_MAX_STREAMS_PER_IP",
            "256",
            "open SSE streams per client IP; more get 429; 0 = no cap",
        ),
        (
            "nats-stream-max-bytes",
            "KEZ_CHAT_NATS_STREAM_MAX_BYTES",
            str(1024**3),
            "total bytes the KEZ_INBOX JetStream stream keeps (when it is created)",
        ),
        (
            "legacy-auth",
            "KEZ_CHAT_LEGACY_AUTH",
            "on",
            "also accept request signatures that do not name this server: on or off "
            "(see the kezchat_legacy_auth_requests metric)",
        ),
        (
            "federation",
            "KEZ_CHAT_FEDERATION",
            "on",
            "talk to other servers (remote handles, server-to-server requests): on or off",
        ),
        (
            "federation-limit",
            "KEZ_CHAT_FEDERATION_LIMIT",
            "6000",
            "messages each other server may deliver here per minute; 0 = off",
        ),
        (
            "federation-queue-limit",
            "KEZ_CHAT_FEDERATION_QUEUE_LIMIT",
            "10000",
            "messages queued for one other server at most (more get 429); 0 = no cap",
        ),
    ]

    #: repeatable options: (flag, environment variable, default, help)
    repeatable = [
        (
            "listen",
            "KEZ_CHAT_LISTEN",
            ["tcp:6969"],
            "endpoint to serve HTTP on, repeatable (tcp:6969, ssl:8443:privateKey=…:certKey=…, "
            "systemd:domain=INET:index=0)",
        ),
        (
            "trusted-proxy",
            "KEZ_CHAT_TRUSTED_PROXIES",
            [],
            "address or network whose X-Forwarded-For is believed, repeatable",
        ),
        (
            "resolve",
            "KEZ_CHAT_RESOLVE",
            [],
            "DOMAIN=URL: reach server DOMAIN at URL instead of https://DOMAIN, repeatable "
            "(plain http:// only this way)",
        ),
        (
            "federation-allow",
            "KEZ_CHAT_FEDERATION_ALLOW",
            [],
            "a domain this server talks to, repeatable; when given, no other is",
        ),
        (
            "federation-deny",
            "KEZ_CHAT_FEDERATION_DENY",
            [],
            "a domain this server never talks to, repeatable",
        ),
    ]

    optParameters = parameters(table)

    optFlags = [
        [
            "allow-server-change",
            None,
            "start although the database was created for another --server: handles "
            "registered under the old one stop being served ($KEZ_CHAT_ALLOW_SERVER_CHANGE=yes)",
        ],
    ]

    def opt_listen(self, value: str) -> None:
        self["listen"].append(value)

    opt_listen.__doc__ = repeatable[0][3] + " ($KEZ_CHAT_LISTEN) [default: tcp:6969]"

    def opt_trusted_proxy(self, value: str) -> None:
        self["trusted-proxy"].append(value)

    opt_trusted_proxy.__doc__ = repeatable[1][3] + " ($KEZ_CHAT_TRUSTED_PROXIES)"

    def opt_resolve(self, value: str) -> None:
        self["resolve"].append(value)

    opt_resolve.__doc__ = repeatable[2][3] + " ($KEZ_CHAT_RESOLVE)"

    def opt_federation_allow(self, value: str) -> None:
        self["federation-allow"].append(value)

    opt_federation_allow.__doc__ = repeatable[3][3] + " ($KEZ_CHAT_FEDERATION_ALLOW)"

    def opt_federation_deny(self, value: str) -> None:
        self["federation-deny"].append(value)

    opt_federation_deny.__doc__ = repeatable[4][3] + " ($KEZ_CHAT_FEDERATION_DENY)"

    def postOptions(self) -> None:
        settings = self.settings()

        server = (settings["server"] or "").lower()
        if not SERVER_RE.fullmatch(server):
            raise usage.UsageError(f"--server {server!r} is not a domain name")
        for proxy in self["trusted-proxy"]:
            try:
                ip_network(proxy, strict=False)
            except ValueError:
                raise usage.UsageError(f"--trusted-proxy {proxy!r} is not an address") from None
        if settings["log-format"] not in ("text", "json"):
            raise usage.UsageError("--log-format is text or json")
        access_log = parse_switch("access-log", settings["access-log"])
        legacy_auth = parse_switch("legacy-auth", settings["legacy-auth"])
        federation = parse_switch("federation", settings["federation"])
        from kezchat.federation.resolve import domain_list, resolve_problem

        problem = resolve_problem(tuple(self["resolve"]))
        if problem is not None:
            raise usage.UsageError(problem)
        try:
            allow = domain_list("federation-allow", self["federation-allow"])
            deny = domain_list("federation-deny", self["federation-deny"])
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        check_db_setting(settings["db"] or "")
        problem = nats_ws_url_problem(settings["nats-ws-url"])
        if problem is not None:
            raise usage.UsageError(problem)
        allow_env = self.environ.get("KEZ_CHAT_ALLOW_SERVER_CHANGE", "").lower()
        if allow_env not in ("", "0", "no", "false", "1", "yes", "true"):
            raise usage.UsageError("KEZ_CHAT_ALLOW_SERVER_CHANGE is yes or no")
        try:
            retention_days = float(settings["retention-days"] or "")
        except ValueError:
            raise usage.UsageError("--retention-days takes a number of days") from None
        problem = retention_days_problem(retention_days)
        if problem is not None:
            raise usage.UsageError(problem)
        retention_bytes = _positive_int("retention-bytes", settings["retention-bytes"])
        problem = retention_bytes_problem(retention_bytes)
        if problem is not None:
            raise usage.UsageError(problem)

        self.config = ChatConfig(
            listen=tuple(self["listen"]),
            db=settings["db"] or "kez-chat.db",
            server=server,
            public_url=settings["public-url"],
            sig_server_url=settings["sig-server-url"] or None,
            web_dir=settings["web-dir"],
            nats_url=settings["nats-url"],
            nats_seed=settings["nats-seed"],
            nats_ws_url=settings["nats-ws-url"] or None,
            callout_issuer_seed=settings["callout-issuer-seed"],
            retention_days=retention_days,
            retention_bytes=retention_bytes,
            trusted_proxies=tuple(self["trusted-proxy"]),
            register_limit=_positive_int("register-limit", settings["register-limit"]),
            send_limit=_positive_int("send-limit", settings["send-limit"]),
            log_format=settings["log-format"] or "text",
            access_log=access_log,
            max_streams_per_handle=_positive_int(
                "max-streams-per-handle", settings["max-streams-per-handle"]
            ),
            max_streams_per_ip=_positive_int("max-streams-per-ip", settings["max-streams-per-ip"]),
            nats_stream_max_bytes=_positive_int(
                "nats-stream-max-bytes", settings["nats-stream-max-bytes"]
            )
            or -1,
            legacy_auth=legacy_auth,
            resolve=tuple(self["resolve"]),
            federation=federation,
            federation_allow=allow,
            federation_deny=deny,
            federation_limit=_positive_int("federation-limit", settings["federation-limit"]),
            federation_queue_limit=_positive_int(
                "federation-queue-limit", settings["federation-queue-limit"]
            ),
            allow_server_change=bool(self["allow-server-change"])
            or allow_env in ("1", "yes", "true"),
        )
        parent = getattr(self, "parent", None)
        if self.config.log_format == "json" and parent is not None:
            # twistd reads its "logger" option when it builds its log
            # observer, which happens after option parsing: setting it here
            # is the supported way for a plugin to choose the log format.
            parent["logger"] = parent.get("logger") or "kezchat.server.logs.json_observer"
