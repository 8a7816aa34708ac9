"""
The C{--db} setting: a SQLite file or a C{postgresql://} URL.

Pure string handling, importable from the option parsers (which twistd
loads before any reactor is chosen).
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

#: URL schemes that select this backend for C{--db}
SCHEMES = ("postgresql://", "postgres://")
#: query parameters of C{--db} read here, not passed on to the server
POOL_MIN, POOL_MAX = "pool_min_size", "pool_max_size"
DEFAULT_POOL_MIN, DEFAULT_POOL_MAX = 2, 10


def is_postgres_url(setting: str) -> bool:
    """
    Whether a C{--db} setting names a PostgreSQL database (else: a SQLite
    file).
    """
    return setting.startswith(SCHEMES)


def redacted(url: str) -> str:
    """
    C{url} without its password, for logs.
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def pool_settings(url: str) -> tuple[str, int, int]:
    """
    Split the pool size parameters off a C{postgresql://} URL.

    @return: the URL for the driver, and the pool's minimum and maximum size.
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    sizes = {POOL_MIN: DEFAULT_POOL_MIN, POOL_MAX: DEFAULT_POOL_MAX}
    kept = []
    for name, value in query:
        if name in sizes:
            if not value.isdigit() or int(value) < 1:
                raise ValueError(f"{name} must be a positive whole number, not {value!r}")
            sizes[name] = int(value)
        else:
            kept.append((name, value))
    if sizes[POOL_MIN] > sizes[POOL_MAX]:
        sizes[POOL_MIN] = sizes[POOL_MAX]
    return urlunsplit(parts._replace(query=urlencode(kept))), sizes[POOL_MIN], sizes[POOL_MAX]


def check_db_setting(setting: str) -> None:
    """
    Refuse a malformed C{postgresql://} URL while parsing options, with
    a usage error rather than a traceback at start.
    """
    from twisted.python import usage

    if is_postgres_url(setting):
        try:
            pool_settings(setting)
        except ValueError as e:
            raise usage.UsageError(f"--db: {e}") from None
