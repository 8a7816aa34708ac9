"""
What can go wrong talking to a KEZ server, as a client sees it.

Two kinds only: the server could not be reached (or stopped answering),
or it answered with a SPEC error body. Callers turn either into a
sentence for a person; neither carries a transport traceback.
"""

from __future__ import annotations


class ClientError(Exception):
    """
    Base of the errors the client helpers raise.
    """


class Unreachable(ClientError):
    """
    No answer from C{url}: refused, unresolvable, timed out, or cut off.
    """

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(url, reason)
        self.url = url
        self.reason = reason

    def __str__(self) -> str:
        return f"cannot reach {self.url}: {self.reason}"


class ServerError(ClientError):
    """
    The server answered with an error status.

    @ivar status: the HTTP status.
    @ivar code: the stable SPEC error code (C{handle_taken}, ...), or
        C{"http_<status>"} when the body was not a SPEC error.
    @ivar message: the server's human text.
    """

    def __init__(self, status: int, code: str, message: str, retry_after: str | None = None):
        super().__init__(status, code, message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.code} ({self.status}): {self.message}"
