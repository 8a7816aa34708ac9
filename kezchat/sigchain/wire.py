"""
Sigchains on the wire: the JSON document C{{"primary", "events"}} and
JSON Lines (one event per line), as the sig-server serves them.

Writers emit JCS so the bytes are deterministic.  Readers accept any
strict JSON but, for JSON Lines, insist that every line ends in C{\\n}:
a stream cut short in mid-line is then told apart from a complete one.
"""

from __future__ import annotations

from typing import Any

from kezchat.identity.jcs import canonical_json
from kezchat.sigchain.errors import MALFORMED, WRONG_SIGNER, ChainError
from kezchat.sigchain.events import Event
from kezchat.sigchain.state import ChainState, load_chain
from kezchat.strictjson import JSONError, loads

JSONL_MEDIA_TYPE = "application/jsonl"


def chain_document(primary: str, events: list[Event]) -> dict[str, Any]:
    return {"primary": primary, "events": events}


def dump_document(primary: str, events: list[Event]) -> bytes:
    """
    The JSON document, as JCS bytes.
    """
    return canonical_json(chain_document(primary, events))


def dump_jsonl(events: list[Event]) -> bytes:
    """
    One JCS event per line, each line ending in C{\\n}.
    """
    return b"".join(canonical_json(event) + b"\n" for event in events)


def parse_document(data: bytes) -> tuple[str, list[Any]]:
    """
    Read a chain document into its primary and (unverified) events.

    @raise ChainError: C{malformed}, if it is not such a document.
    """
    try:
        document = loads(data)
    except JSONError as e:
        raise ChainError(MALFORMED, str(e)) from e
    if not isinstance(document, dict) or set(document) != {"primary", "events"}:
        raise ChainError(MALFORMED, 'a chain document is {"primary", "events"}')
    if not isinstance(document["primary"], str) or not isinstance(document["events"], list):
        raise ChainError(MALFORMED, "primary must be a string and events a list")
    return document["primary"], document["events"]


def parse_jsonl(data: bytes) -> list[Any]:
    """
    Read JSON Lines into (unverified) events.

    @raise ChainError: C{malformed}, naming the line's seq position.
    """
    if data and not data.endswith(b"\n"):
        raise ChainError(MALFORMED, "the last line does not end in a newline")
    events = []
    for position, line in enumerate(data.split(b"\n")[:-1], start=1):
        try:
            events.append(loads(line))
        except JSONError as e:
            raise ChainError(MALFORMED, f"line {position}: {e}", position) from e
    return events


def read_document(data: bytes, primary: str | None = None) -> ChainState:
    """
    Parse and verify a chain document.

    @param primary: the key the reader expects the chain to belong to
        (from the handle registry); C{None} trusts the document's own.
    @raise ChainError: if the bytes are not a valid chain of that key.
    """
    claimed, events = parse_document(data)
    if primary is not None and claimed != primary:
        raise ChainError(WRONG_SIGNER, f"the document is the chain of {claimed}, not {primary}")
    return load_chain(claimed, events)


def read_jsonl(data: bytes, primary: str) -> ChainState:
    """
    Parse and verify a JSON Lines chain of C{primary}.
    """
    return load_chain(primary, parse_jsonl(data))
