"""
The body of each event type (SPEC §7), as constructors for writers and
checks for readers.

Checks are strict — required fields present, nothing unknown, types and
lengths right — because a chain is only as meaningful as the least
understood event in it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kezchat.sigchain.fields import (
    FieldError,
    hex64,
    integer,
    one_of,
    require_keys,
    require_object,
    text,
)

ADD_ENDPOINT = "add_endpoint"
REMOVE_ENDPOINT = "remove_endpoint"
ADD_CLAIM = "add_claim"
SET_SHARED_FILES = "set_shared_files"
REVOKE = "revoke"

PROTOCOLS = ("nats", "iroh", "https")

# Which optional add_endpoint field each protocol cannot do without.
_ENDPOINT_NEEDS = {"nats": "url", "https": "url", "iroh": "node_id"}

MAX_ID = 128
MAX_URL = 2048


def _add_endpoint(body: dict[str, Any]) -> None:
    require_keys(body, "add_endpoint body", ["id", "protocol"], ["url", "inbox", "node_id"])
    text(body["id"], "endpoint id", MAX_ID)
    protocol = one_of(body["protocol"], "protocol", PROTOCOLS)
    if "url" in body:
        text(body["url"], "url", MAX_URL)
    if "inbox" in body:
        text(body["inbox"], "inbox", MAX_URL)
    if "node_id" in body:
        hex64(body["node_id"], "node_id")
    needed = _ENDPOINT_NEEDS[protocol]
    if needed not in body:
        raise FieldError(f"a {protocol} endpoint needs {needed}")


def _remove_endpoint(body: dict[str, Any]) -> None:
    require_keys(body, "remove_endpoint body", ["id"])
    text(body["id"], "endpoint id", MAX_ID)


def _add_claim(body: dict[str, Any]) -> None:
    require_keys(body, "add_claim body", ["claim"], ["proof_url"])
    claim = text(body["claim"], "claim", 512)
    kind, sep, value = claim.partition(":")
    if not (sep and kind and value):
        raise FieldError("a claim is <kind>:<value>, e.g. github:chris")
    if "proof_url" in body:
        text(body["proof_url"], "proof_url", MAX_URL)


def _set_shared_files(body: dict[str, Any]) -> None:
    require_keys(body, "set_shared_files body", ["manifest_blake3", "size", "url"])
    hex64(body["manifest_blake3"], "manifest_blake3")
    integer(body["size"], "size")
    text(body["url"], "url", MAX_URL)


def _revoke(body: dict[str, Any]) -> None:
    require_keys(body, "revoke body", ["seq"])
    integer(body["seq"], "revoked seq", minimum=1)


_CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    ADD_ENDPOINT: _add_endpoint,
    REMOVE_ENDPOINT: _remove_endpoint,
    ADD_CLAIM: _add_claim,
    SET_SHARED_FILES: _set_shared_files,
    REVOKE: _revoke,
}

EVENT_TYPES = tuple(_CHECKS)


def check_body(event_type: object, body: object) -> None:
    """
    Check that C{body} is a well-formed body for C{event_type}.

    @raise FieldError: naming what is wrong.
    """
    event_type = one_of(event_type, "type", EVENT_TYPES)
    _CHECKS[event_type](require_object(body, "body"))


def add_endpoint(
    id: str,
    protocol: str,
    *,
    url: str | None = None,
    inbox: str | None = None,
    node_id: str | None = None,
) -> dict[str, Any]:
    """
    The body advertising a way to reach the key's owner.
    """
    body: dict[str, Any] = {"id": id, "protocol": protocol}
    for key, value in (("url", url), ("inbox", inbox), ("node_id", node_id)):
        if value is not None:
            body[key] = value
    _add_endpoint(body)
    return body


def remove_endpoint(id: str) -> dict[str, Any]:
    body = {"id": id}
    _remove_endpoint(body)
    return body


def add_claim(claim: str, proof_url: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"claim": claim}
    if proof_url is not None:
        body["proof_url"] = proof_url
    _add_claim(body)
    return body


def set_shared_files(manifest_blake3: str, size: int, url: str) -> dict[str, Any]:
    """
    The body committing to one manifest blob by its BLAKE3 digest.
    """
    body = {"manifest_blake3": manifest_blake3, "size": size, "url": url}
    _set_shared_files(body)
    return body


def revoke(seq: int) -> dict[str, Any]:
    body = {"seq": seq}
    _revoke(body)
    return body
