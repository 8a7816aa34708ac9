"""
The two places where kezchat relies on twisted.web's private internals,
kept here and nowhere else. Twisted has no public API for either:

 - the request line's path is not known to a C{Request} until its body is
   complete, but the body cap must be chosen before the first body byte;
   C{HTTPChannel} keeps it in C{_path} from the request line on;
 - a malformed request line, header or chunk is answered by
   C{HTTPChannel._respondToBadRequestAndDisconnect} with a bare 400 and no
   body; overriding it is the only way to give that answer the error shape
   of every other one.

C{tests/test_twisted_private.py} checks both against the installed
Twisted, so an upgrade that changes them fails loudly there rather than
silently in production.
"""

from __future__ import annotations

from twisted.web.http import HTTPChannel

#: the hook L{BadRequestHook} overrides
BAD_REQUEST_HOOK = "_respondToBadRequestAndDisconnect"


def request_line_path(channel: object) -> bytes:
    """
    The path of the request line C{channel} is receiving (C{b""} before one).
    """
    path = getattr(channel, "_path", b"")
    return path if isinstance(path, bytes) else b""


class BadRequestHook(HTTPChannel):
    """
    An C{HTTPChannel} whose answer to a malformed request is
    L{bad_request}.
    """

    def bad_request(self) -> None:
        """
        Answer a request the HTTP parser could not read, and disconnect.
        """
        HTTPChannel._respondToBadRequestAndDisconnect(self)

    def _respondToBadRequestAndDisconnect(self) -> None:
        self.bad_request()
