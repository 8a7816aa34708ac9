"""
What the chat-server and sig-server clients share whatever carries their
requests (treq on a reactor, or L{kezchat.client.blocking} for a one-shot
command): the deadline, the size bounds of the answers, and how an error
answer becomes a L{ServerError}. No Twisted here, so a command that runs
without a reactor can use it.
"""

from __future__ import annotations

import json

from kezchat.client.errors import ServerError

#: seconds a whole exchange (connect, headers, body) may take before the
#: server counts as unreachable
DEFAULT_TIMEOUT = 30.0
#: the largest body read from an endpoint that answers one small record
SMALL_BODY = 1024 * 1024
#: the largest inbox page (at most L{INBOX_PAGE} items of at most a 256 KiB
#: envelope each, with their JSON around them)
INBOX_PAGE = 100
INBOX_BODY = INBOX_PAGE * 300 * 1024
#: the largest sigchain document read
CHAIN_BODY = 16 * 1024 * 1024


def origin(url: str) -> str:
    """
    C{scheme://host:port} of C{url}: what an L{Unreachable} names.
    """
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


def too_large(status: int, limit: int) -> ServerError:
    return ServerError(status, "too_large", f"the server's answer is larger than {limit} bytes")


def server_error(status: int, body: bytes, retry_after: str | None) -> ServerError:
    """
    The error an answer with an unexpected C{status} stands for: the SPEC
    error body's code and message, else C{http_<status>} and the start of
    the body.
    """
    try:
        error = json.loads(body)["error"]
        return ServerError(status, str(error["code"]), str(error["message"]), retry_after)
    except (ValueError, KeyError, TypeError):
        return ServerError(
            status,
            f"http_{status}",
            body[:200].decode("utf-8", "replace") or "no details",
            retry_after,
        )
