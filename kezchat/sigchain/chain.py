"""
Verifying a sigchain, whole or one appended event at a time.

A chain is valid when every event is well formed, signed by the chain's
primary, numbered 1, 2, 3, … and linked to its predecessor by C{prev};
and when every C{revoke} names an earlier event that is neither a revoke
nor already revoked.  The same L{ChainVerifier} serves a client checking
a fetched chain and the sig-server checking an append, so both refuse
exactly the same things for exactly the same reasons.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from kezchat.identity.keys import InvalidKey, parse_primary
from kezchat.sigchain.bodies import REVOKE
from kezchat.sigchain.errors import (
    BAD_PREV,
    BAD_REVOKE,
    BAD_SEQ,
    MALFORMED,
    WRONG_SIGNER,
    ChainError,
)
from kezchat.sigchain.events import Event, check_event_shape, check_signature, event_hash


class ChainVerifier:
    """
    The head of a chain being verified: enough state to judge the next
    event without keeping the events themselves.

    @ivar primary: the C{ed25519:<hex>} key every event must be signed by.
    @ivar head_seq: the seq of the last accepted event (0 for none).
    @ivar head_hash: L{event_hash} of the last accepted event, or C{None}.
    """

    def __init__(self, primary: str) -> None:
        try:
            parse_primary(primary)
        except InvalidKey as e:
            raise ChainError(MALFORMED, f"chain primary: {e}") from e
        self.primary = primary
        self.head_seq = 0
        self.head_hash: str | None = None
        self._types: dict[int, str] = {}
        self._revoked: set[int] = set()

    @classmethod
    def trusting(cls, primary: str, events: Iterable[Event]) -> ChainVerifier:
        """
        Rebuild the head from events verified earlier (for instance, the
        ones a sig-server stored), skipping the signature checks.
        """
        verifier = cls(primary)
        for event in events:
            verifier._advance(event)
        return verifier

    @classmethod
    def resume(
        cls,
        primary: str,
        head_seq: int,
        head_hash: str | None,
        types: Mapping[int, str],
        revoked: Iterable[int],
    ) -> ChainVerifier:
        """
        Rebuild the head from a summary a store keeps (the seq, type and
        revoke target of each event, and the last event's hash), so that
        judging an append costs no signature checks and no JSON parsing.
        """
        verifier = cls(primary)
        verifier.head_seq = head_seq
        verifier.head_hash = head_hash
        verifier._types = dict(types)
        verifier._revoked = set(revoked)
        return verifier

    def check(self, event: object) -> Event:
        """
        Judge C{event} as the next one, without accepting it.

        @return: the event, known to be well formed.
        @raise ChainError: with the reason and the expected seq.
        """
        event = check_signed(self.primary, event, self.head_seq + 1)
        self.check_place(event)
        return event

    def check_place(self, event: Event) -> None:
        """
        Judge where a signed, well-formed event (see L{check_signed}) would
        go: right after the head, linked to it, revoking only what can be.

        @raise ChainError: C{bad_seq}, C{bad_prev} or C{bad_revoke}.
        """
        expected = self.head_seq + 1
        if event["seq"] != expected:
            raise ChainError(BAD_SEQ, f"seq is {event['seq']}, expected {expected}", expected)
        if event["prev"] != self.head_hash:
            raise ChainError(BAD_PREV, "prev is not the hash of the previous event", expected)
        if event["type"] == REVOKE:
            target = event["body"]["seq"]
            if self._types.get(target) == REVOKE:
                raise ChainError(BAD_REVOKE, f"event {target} is a revoke", expected)
            if target in self._revoked:
                raise ChainError(BAD_REVOKE, f"event {target} is already revoked", expected)

    def append(self, event: object) -> Event:
        """
        Check C{event} and, if it is valid, make it the new head.
        """
        event = self.check(event)
        self._advance(event)
        return event

    def _advance(self, event: Event) -> None:
        self.head_seq = event["seq"]
        self.head_hash = event_hash(event)
        self._types[event["seq"]] = event["type"]
        if event["type"] == REVOKE:
            self._revoked.add(event["body"]["seq"])


def check_signed(primary: str, event: object, position: int | None = None) -> Event:
    """
    Check what an event says about itself: its shape, that C{primary}
    signed it, and its signature.  Needs no chain, so a server can do it
    before touching storage.

    @param position: reported as L{ChainError.seq} (defaults to the
        event's own seq).
    @raise ChainError: C{malformed}, C{wrong_signer} or C{bad_signature}.
    """
    event = check_event_shape(event, position)
    where = event["seq"] if position is None else position
    if event["signer"] != primary:
        raise ChainError(WRONG_SIGNER, f"signed by {event['signer']}, not {primary}", where)
    check_signature(event, where)
    return event


def verify_chain(primary: str, events: object) -> list[Event]:
    """
    Verify a whole chain from its first event.

    @return: the events, all valid.
    @raise ChainError: at the first event that is not.
    """
    if not isinstance(events, Sequence) or isinstance(events, str | bytes):
        raise ChainError(MALFORMED, "events must be a list")
    verifier = ChainVerifier(primary)
    return [verifier.append(event) for event in events]
