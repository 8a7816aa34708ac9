"""
RFC 3339 timestamps, the one time format on the wire.
"""

from datetime import UTC, datetime
from functools import lru_cache


def format_rfc3339(seconds: float) -> str:
    """
    C{2026-05-25T03:00:00Z}: UTC, whole seconds, a literal C{Z}.
    """
    return _format_whole_second(int(seconds))


@lru_cache(maxsize=1024)
def _format_whole_second(seconds: int) -> str:
    # a busy relay stamps thousands of messages within the same second
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: object) -> float:
    """
    Seconds since the epoch of an RFC 3339 timestamp that names its offset.

    @raise ValueError: not a string, not RFC 3339, or no offset given
        (a naive time could mean anything).
    """
    if not isinstance(text, str) or len(text) > 64 or "T" not in text.upper():
        raise ValueError("expected an RFC 3339 timestamp")
    parsed = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("an RFC 3339 timestamp names its UTC offset")
    return parsed.timestamp()
