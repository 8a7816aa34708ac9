"""
The sig-server's domain object: read a chain, append one event.

An append is checked in two steps.  What the event says about itself —
shape, signer, signature — is checked first, with no storage involved.
Where it goes — the next seq, linked to the head, revoking only what can
be revoked — is judged against the stored chain inside the write, so the
judgement and the insert are one atomic step.  Both steps are the
sigchain library's own checks, so the server refuses exactly what a
verifying client would.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred

from kezchat.errors import KezError
from kezchat.identity.jcs import canonical_json
from kezchat.identity.keys import PRIMARY_PREFIX, is_key_hex
from kezchat.sigchain import ChainError, ChainVerifier, Event, check_signed, event_hash
from kezchat.sigchain.bodies import REVOKE
from kezchat.sigchain.errors import FORK, MALFORMED
from kezchat.sigchain.wire import dump_document, dump_jsonl
from kezchat.sigserver.store import EventRow, SQLiteSigchainStore

#: events one chain may hold unless configured otherwise
DEFAULT_MAX_EVENTS = 10_000

#: runs C{fn(*args)} off the reactor thread; a Deferred of its result
Offload = Callable[..., Deferred[Any]]


@dataclass(frozen=True)
class Appended:
    """
    The outcome of an append: C{created} is False when the same event was
    already stored (a client retrying after a lost response).
    """

    seq: int
    hash: str
    created: bool


def primary_of(key_hex: str) -> str:
    """
    The primary named by the C{<hex>} of a sigchain URL.

    @raise KezError: C{bad_request} unless 64 lowercase hex characters.
    """
    if not is_key_hex(key_hex):
        raise KezError("bad_request", "the key in the path must be 64 lowercase hex characters")
    return PRIMARY_PREFIX + key_hex


def _refusal(error: ChainError) -> KezError:
    code = "bad_request" if error.code == MALFORMED else error.code
    return KezError(code, str(error))


def _judge(primary: str, event: Event, hash: str) -> Callable[[list[EventRow]], bool]:
    def judge(stored: list[EventRow]) -> bool:
        if event["seq"] <= len(stored):
            if stored[event["seq"] - 1].hash == hash:
                return False
            raise ChainError(
                FORK, f"seq {event['seq']} already holds a different event", event["seq"]
            )
        head = stored[-1] if stored else None
        ChainVerifier.resume(
            primary,
            head_seq=head.seq if head else 0,
            head_hash=head.hash if head else None,
            types={row.seq: row.type for row in stored},
            revoked=[row.revokes for row in stored if row.revokes is not None],
        ).check_place(event)
        return True

    return judge


def _verified(primary: str, body: object) -> tuple[Event, str, str]:
    """
    The event, its hash and its JCS text: the CPU-heavy half of an append
    (signature, canonical JSON), run off the reactor thread.
    """
    event = check_signed(primary, body)
    return event, event_hash(event), canonical_json(event).decode("utf-8")


def _render(primary: str, texts: list[str], jsonl: bool) -> bytes:
    events = [json.loads(text) for text in texts]
    return dump_jsonl(events) if jsonl else dump_document(primary, events)


class Sigchains:
    """
    Reads and appends sigchains. Parsing, signature checks and rendering
    run through C{offload} (a thread pool in the server), so a long chain or
    a burst of appends never stalls the reactor; a chain holds at most
    C{max_events} events.
    """

    def __init__(
        self,
        store: SQLiteSigchainStore,
        clock: Callable[[], float],
        *,
        max_events: int = DEFAULT_MAX_EVENTS,
        offload: Offload = maybeDeferred,
    ) -> None:
        if max_events < 1:
            raise ValueError("a chain must be allowed at least one event")
        self._store = store
        self._clock = clock
        self.max_events = max_events
        self._offload = offload

    async def chain(self, key_hex: str) -> tuple[str, list[Event]]:
        """
        C{(primary, events)}; a key nobody has appended to has an empty
        chain, which is a valid chain.
        """
        primary = primary_of(key_hex)
        texts = await self._store.events(primary)
        return primary, await self._offload(lambda: [json.loads(text) for text in texts])

    async def rendered(self, key_hex: str, jsonl: bool) -> bytes:
        """
        The chain as a JCS document, or JSON Lines if C{jsonl}.
        """
        primary = primary_of(key_hex)
        texts = await self._store.events(primary)
        # Offload is Callable[..., Deferred[Any]]: _render's bytes come back as Any
        rendered: bytes = await self._offload(_render, primary, texts, jsonl)
        return rendered

    async def append(self, key_hex: str, body: object) -> Appended:
        """
        Verify and store one event of C{key_hex}'s chain.

        @raise KezError: C{bad_request} (malformed), C{wrong_signer},
            C{bad_signature}, C{fork}, C{bad_seq}, C{bad_prev}, C{bad_revoke},
        C{chain_too_long}.
        """
        primary = primary_of(key_hex)
        try:
            event, hash, encoded = await self._offload(_verified, primary, body)
        except ChainError as e:
            raise _refusal(e) from None
        if event["seq"] > self.max_events:
            # a valid append is always seq = length + 1, so this is exactly
            # "the chain would grow past the cap"
            raise KezError(
                "chain_too_long",
                f"a sigchain holds at most {self.max_events} events on this server",
            )
        row = EventRow(
            event["seq"],
            event["type"],
            event["body"]["seq"] if event["type"] == REVOKE else None,
            hash,
        )
        try:
            created = await self._store.append(
                primary, row, encoded, self._clock(), _judge(primary, event, hash)
            )
        except ChainError as e:
            raise _refusal(e) from None
        return Appended(event["seq"], hash, created)
