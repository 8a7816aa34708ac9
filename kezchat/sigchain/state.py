"""
What a verified chain currently says: the live endpoints, the claims and
the latest shared-files pointer.

Revocation is applied before anything else: C{revoke {"seq": n}} cancels
the effect of event I{n} as if it had never been appended, so revoking a
C{remove_endpoint} brings the endpoint back and revoking the latest
C{set_shared_files} falls back to the one before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kezchat.sigchain.bodies import (
    ADD_CLAIM,
    ADD_ENDPOINT,
    REMOVE_ENDPOINT,
    REVOKE,
    SET_SHARED_FILES,
)
from kezchat.sigchain.chain import verify_chain
from kezchat.sigchain.events import Event, event_hash


@dataclass(frozen=True)
class Endpoint:
    """
    A live C{add_endpoint}; C{seq} is the event that added it.
    """

    id: str
    protocol: str
    seq: int
    url: str | None = None
    inbox: str | None = None
    node_id: str | None = None


@dataclass(frozen=True)
class Claim:
    claim: str
    seq: int
    proof_url: str | None = None


@dataclass(frozen=True)
class SharedFiles:
    """
    The manifest the owner currently commits to.
    """

    manifest_blake3: str
    size: int
    url: str
    seq: int


@dataclass(frozen=True)
class ChainState:
    """
    The current meaning of a chain.

    @ivar endpoints: live endpoints in the order they were (last) added;
        an C{add_endpoint} reusing a live id replaces that endpoint.
    @ivar claims: live claims in order; re-claiming the same string
        replaces the earlier claim.
    @ivar revoked: the seqs whose effect was cancelled.
    """

    primary: str
    head_seq: int
    head_hash: str | None
    endpoints: tuple[Endpoint, ...]
    claims: tuple[Claim, ...]
    shared_files: SharedFiles | None
    revoked: frozenset[int]

    def endpoint(self, id: str) -> Endpoint | None:
        return next((e for e in self.endpoints if e.id == id), None)

    def endpoints_for(self, protocol: str) -> tuple[Endpoint, ...]:
        return tuple(e for e in self.endpoints if e.protocol == protocol)


def walk(primary: str, events: Sequence[Event]) -> ChainState:
    """
    Fold I{verified} events into their current state.

    Removing an endpoint that is not live is a no-op: the chain stays
    valid, it just says nothing new.
    """
    revoked = frozenset(e["body"]["seq"] for e in events if e["type"] == REVOKE)
    endpoints: dict[str, Endpoint] = {}
    claims: dict[str, Claim] = {}
    shared: SharedFiles | None = None
    for event in events:
        seq, kind, body = event["seq"], event["type"], event["body"]
        if seq in revoked:
            continue
        if kind == ADD_ENDPOINT:
            endpoints.pop(body["id"], None)
            endpoints[body["id"]] = Endpoint(
                id=body["id"],
                protocol=body["protocol"],
                seq=seq,
                url=body.get("url"),
                inbox=body.get("inbox"),
                node_id=body.get("node_id"),
            )
        elif kind == REMOVE_ENDPOINT:
            endpoints.pop(body["id"], None)
        elif kind == ADD_CLAIM:
            claims.pop(body["claim"], None)
            claims[body["claim"]] = Claim(body["claim"], seq, body.get("proof_url"))
        elif kind == SET_SHARED_FILES:
            shared = SharedFiles(body["manifest_blake3"], body["size"], body["url"], seq)
    return ChainState(
        primary=primary,
        head_seq=events[-1]["seq"] if events else 0,
        head_hash=event_hash(events[-1]) if events else None,
        endpoints=tuple(endpoints.values()),
        claims=tuple(claims.values()),
        shared_files=shared,
        revoked=revoked,
    )


def load_chain(primary: str, events: object) -> ChainState:
    """
    Verify C{events} as C{primary}'s chain and return what it says.

    @raise ChainError: if any event fails verification.
    """
    return walk(primary, verify_chain(primary, events))
