"""
The stable error codes of the public API (SPEC §3).

Domain objects raise L{KezError} with a code; only the HTTP layer knows
which status a code maps to, so the same objects serve the CLI and tests.
"""

from __future__ import annotations

import json

#: code → HTTP status, exactly as SPEC §3 lists them.
STATUS_BY_CODE: dict[str, int] = {
    "bad_request": 400,
    "invalid_handle": 400,
    "reserved_handle": 400,
    "wrong_server": 400,
    # federation: off on this server, or the other domain not allowed
    "federation_disabled": 400,
    "federation_refused": 403,
    "stale_timestamp": 401,
    "bad_signature": 401,
    "unauthorized": 401,
    "not_found": 404,
    "unknown_recipient": 404,
    "method_not_allowed": 405,
    "request_timeout": 408,
    "handle_taken": 409,
    "primary_taken": 409,
    # kezsig (SPEC §7): an event's own flaws are 400/401, its place in the
    # chain is a conflict with what is stored (409: fetch and retry)
    "wrong_signer": 400,
    "fork": 409,
    "bad_seq": 409,
    "bad_prev": 409,
    "bad_revoke": 409,
    # kezsig: the chain already holds as many events as the server keeps
    "chain_too_long": 409,
    # an idempotency key reused by its sender for a different message
    "idempotency_conflict": 409,
    "payload_too_large": 413,
    "rate_limited": 429,
    # another server did not answer, or answered what does not verify
    "remote_failed": 502,
    "unavailable": 503,
}


class KezError(Exception):
    """
    A request was refused for a reason the client can act on.

    @ivar code: one of L{STATUS_BY_CODE}'s keys.
    @ivar retry_after: seconds, for C{rate_limited}.
    """

    def __init__(self, code: str, message: str, *, retry_after: int | None = None) -> None:
        if code not in STATUS_BY_CODE:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after

    @property
    def status(self) -> int:
        return STATUS_BY_CODE[self.code]

    def to_json(self) -> dict[str, dict[str, str]]:
        """
        The SPEC error shape, C{{"error": {"code", "message"}}}.
        """
        return {"error": {"code": self.code, "message": self.message}}

    def body(self) -> bytes:
        """
        L{to_json} as a compact UTF-8 JSON body: the one way every error
        response of both servers is written.
        """
        return json_body(self.to_json())


def json_body(value: object) -> bytes:
    """
    C{value} as compact UTF-8 JSON, the form of every JSON response body.
    """
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class NatsSetupError(Exception):
    """
    NATS is configured but cannot work as configured: wrong reactor,
    missing or wrong seed files. Raised when the service is built, so that
    C{twistd} stops with the message instead of running half a server.
    (Defined on the ground floor because the asyncio bridge and the NATS
    key files, both below C{kezchat.natsbridge}, raise it too;
    C{kezchat.natsbridge.errors} names it for its users.)
    """
