"""
Tests for L{kezchat.sigchain}: valid chains verify, damaged ones fail with
the precise reason, and walking a chain honours removal and revocation.
"""

from __future__ import annotations

import copy

from hypothesis import assume, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from kezchat.identity.jcs import canonical_json
from kezchat.identity.keys import KeyPair
from kezchat.sigchain import (
    ChainError,
    ChainVerifier,
    bodies,
    dump_document,
    dump_jsonl,
    event_hash,
    load_chain,
    next_event,
    read_document,
    read_jsonl,
    sign_event,
    verify_chain,
)
from kezchat.sigchain.errors import CODES
from tests.strategies import Chain, byte_flips, chains, keypairs

ALICE = KeyPair(bytes(range(32)))
MALLORY = KeyPair(bytes(range(1, 33)))
T = "2026-05-25T03:00:00Z"
HEX = "ab" * 32


def build(keypair: KeyPair, *steps: tuple[str, dict]) -> list[dict]:
    events: list[dict] = []
    for kind, body in steps:
        events.append(next_event(keypair, events, kind, body, created_at=T))
    return events


def resign(keypair: KeyPair, event: dict) -> dict:
    """
    C{event} with its signature recomputed, so that only the field a test
    changed is wrong.
    """
    event = {k: v for k, v in event.items() if k != "sig"}
    event["sig"] = keypair.sign_jcs(event)
    return event


NATS = bodies.add_endpoint("nats-1", "nats", url="wss://kez.lat/nats")
IROH = bodies.add_endpoint("laptop", "iroh", node_id=HEX)


def reference_state(events: list[dict]) -> tuple[dict, dict | None]:
    """
    A second, deliberately naive reading of a chain: an endpoint is live if
    its latest unrevoked add comes after every unrevoked remove of its id.
    """
    revoked = {e["body"]["seq"] for e in events if e["type"] == "revoke"}
    alive = [e for e in events if e["seq"] not in revoked]
    endpoints = {}
    for event in alive:
        if event["type"] != "add_endpoint":
            continue
        later = [e for e in alive if e["seq"] > event["seq"]]
        ident = event["body"]["id"]
        if not any(
            e["type"] in ("add_endpoint", "remove_endpoint") and e["body"]["id"] == ident
            for e in later
        ):
            endpoints[ident] = event["body"]
    shared = [e["body"] for e in alive if e["type"] == "set_shared_files"]
    return endpoints, shared[-1] if shared else None


class ValidChainTests(SynchronousTestCase):
    @settings(max_examples=150, deadline=None)
    @given(chains())
    def test_random_chains_verify(self, chain: Chain) -> None:
        """
        Every chain built by the writer API verifies, through both wire
        forms, and means what a naive reading says it means.
        """
        state = load_chain(chain.primary, chain.events)
        self.assertEqual(state.head_seq, len(chain.events))
        expected_endpoints, expected_shared = reference_state(chain.events)
        self.assertEqual(
            {e.id: e.protocol for e in state.endpoints},
            {k: v["protocol"] for k, v in expected_endpoints.items()},
        )
        if expected_shared is None:
            self.assertIsNone(state.shared_files)
        else:
            self.assertEqual(state.shared_files.manifest_blake3, expected_shared["manifest_blake3"])
        self.assertEqual(read_document(dump_document(chain.primary, chain.events)), state)
        self.assertEqual(read_jsonl(dump_jsonl(chain.events), chain.primary), state)
        trusted = ChainVerifier.trusting(chain.primary, chain.events)
        self.assertEqual((trusted.head_seq, trusted.head_hash), (state.head_seq, state.head_hash))

    def test_empty_chain(self) -> None:
        state = load_chain(ALICE.primary, [])
        self.assertEqual((state.head_seq, state.head_hash, state.endpoints), (0, None, ()))


def event_spans(data: bytes, events: list[dict]) -> list[tuple[int, int]]:
    spans, start = [], 0
    for event in events:
        encoded = canonical_json(event)
        start = data.index(encoded, start)
        spans.append((start, start + len(encoded)))
        start += len(encoded)
    return spans


class TamperTests(SynchronousTestCase):
    """
    Any single-byte change anywhere in a serialized chain is detected, and
    blamed on the event that holds the changed byte.
    """

    def assert_blamed(self, error: ChainError, index: int, spans: list[tuple[int, int]]) -> None:
        self.assertIn(error.code, CODES)
        owner = next((n for n, (a, b) in enumerate(spans, 1) if a <= index < b), None)
        if owner is not None:
            self.assertIn(error.seq, (None, owner), str(error))

    @settings(max_examples=300, deadline=None)
    @given(st.data())
    def test_document_byte_flip(self, data: st.DataObject) -> None:
        chain = data.draw(chains(max_events=5))
        encoded = dump_document(chain.primary, chain.events)
        index, damaged = data.draw(byte_flips(encoded))
        with self.assertRaises(ChainError) as caught:
            read_document(damaged, primary=chain.primary)
        self.assert_blamed(caught.exception, index, event_spans(encoded, chain.events))

    @settings(max_examples=300, deadline=None)
    @given(st.data())
    def test_jsonl_byte_flip(self, data: st.DataObject) -> None:
        chain = data.draw(chains(max_events=5).filter(lambda c: c.events))
        encoded = dump_jsonl(chain.events)
        index, damaged = data.draw(byte_flips(encoded))
        with self.assertRaises(ChainError) as caught:
            read_jsonl(damaged, chain.primary)
        self.assert_blamed(caught.exception, index, event_spans(encoded, chain.events))

    @settings(max_examples=50, deadline=None)
    @given(chains(max_events=4).filter(lambda c: c.events), keypairs)
    def test_other_primary(self, chain: Chain, other: KeyPair) -> None:
        """
        A valid chain is still refused as someone else's.
        """
        assume(other.seed != chain.keypair.seed)
        with self.assertRaises(ChainError) as caught:
            load_chain(other.primary, chain.events)
        self.assertEqual((caught.exception.code, caught.exception.seq), ("wrong_signer", 1))


class ReasonTests(SynchronousTestCase):
    """
    Each way an event can be wrong has its own code.
    """

    def assert_fails(self, events: list, code: str, seq: int | None) -> None:
        with self.assertRaises(ChainError) as caught:
            verify_chain(ALICE.primary, events)
        self.assertEqual((caught.exception.code, caught.exception.seq), (code, seq))

    def test_bad_signature(self) -> None:
        events = build(ALICE, ("add_endpoint", NATS))
        events[0]["body"]["url"] = "wss://evil/nats"
        self.assert_fails(events, "bad_signature", 1)

    def test_wrong_signer(self) -> None:
        events = build(ALICE, ("add_endpoint", NATS))
        events.append(next_event(MALLORY, events, "add_endpoint", IROH, created_at=T))
        self.assert_fails(events, "wrong_signer", 2)

    def test_bad_seq(self) -> None:
        events = build(ALICE, ("add_endpoint", NATS), ("add_endpoint", IROH))
        events[1] = resign(ALICE, {**events[1], "seq": 3})
        self.assert_fails(events, "bad_seq", 2)

    def test_duplicate_seq(self) -> None:
        events = build(ALICE, ("add_endpoint", NATS))
        self.assert_fails(events + events, "bad_seq", 2)

    def test_bad_prev(self) -> None:
        events = build(ALICE, ("add_endpoint", NATS), ("add_endpoint", IROH))
        events[1] = resign(ALICE, {**events[1], "prev": "00" * 32})
        self.assert_fails(events, "bad_prev", 2)

    def test_prev_commits_to_signature(self) -> None:
        """
        prev hashes the previous event I{with} its sig.
        """
        events = build(ALICE, ("add_endpoint", NATS), ("add_endpoint", IROH))
        unsigned = {k: v for k, v in events[0].items() if k != "sig"}
        events[1] = resign(ALICE, {**events[1], "prev": event_hash(unsigned)})
        self.assert_fails(events, "bad_prev", 2)

    def test_first_prev_must_be_null(self) -> None:
        events = build(ALICE, ("add_endpoint", NATS))
        events[0] = resign(ALICE, {**events[0], "prev": HEX})
        self.assert_fails(events, "malformed", 1)

    def test_revoke_of_revoke(self) -> None:
        events = build(ALICE, ("add_endpoint", NATS), ("revoke", bodies.revoke(1)))
        events.append(next_event(ALICE, events, "revoke", bodies.revoke(2), created_at=T))
        self.assert_fails(events, "bad_revoke", 3)

    def test_double_revoke(self) -> None:
        events = build(ALICE, ("add_endpoint", NATS), ("revoke", bodies.revoke(1)))
        events.append(next_event(ALICE, events, "revoke", bodies.revoke(1), created_at=T))
        self.assert_fails(events, "bad_revoke", 3)

    def test_revoke_forward(self) -> None:
        events = build(ALICE, ("add_endpoint", NATS))
        with self.assertRaises(ChainError) as caught:
            next_event(ALICE, events, "revoke", bodies.revoke(2), created_at=T)
        self.assertEqual(caught.exception.code, "malformed")

    def test_not_a_list(self) -> None:
        self.assert_fails({"seq": 1}, "malformed", None)  # type: ignore[arg-type]

    def test_bad_primary(self) -> None:
        with self.assertRaises(ChainError) as caught:
            verify_chain("ed25519:XYZ", [])
        self.assertEqual(caught.exception.code, "malformed")

    def test_malformed_events(self) -> None:
        good = build(ALICE, ("add_endpoint", NATS))[0]
        resigned = [
            {k: v for k, v in good.items() if k not in ("created_at", "sig")},
            {**good, "extra": 1},
            {**good, "seq": True},
            {**good, "seq": 1.0},
            {**good, "seq": 0},
            {**good, "type": "delete_everything"},
            {**good, "body": []},
            {**good, "body": {"id": "x", "protocol": "smtp", "url": "u"}},
            {**good, "body": {"id": "x", "protocol": "nats"}},
            {**good, "body": {"id": "x", "protocol": "iroh", "node_id": "AB" * 32}},
            {**good, "body": {**NATS, "url": "a\nb"}},
            {**good, "body": {**NATS, "colour": "red"}},
            {**good, "type": "add_claim", "body": {"claim": "no-colon"}},
            {
                **good,
                "type": "set_shared_files",
                "body": {"manifest_blake3": HEX, "size": -1, "url": "u"},
            },
            {**good, "type": "revoke", "body": {"seq": "1"}},
            {**good, "created_at": "yesterday"},
            {**good, "created_at": "2026-13-01T00:00:00Z"},
        ]
        variants = [
            "not an object",
            {**good, "signer": ALICE.primary.upper()},
            {**good, "sig": good["sig"].upper()},
            *(resign(ALICE, variant) for variant in resigned),
        ]
        for variant in variants:
            with self.subTest(variant=variant):
                self.assert_fails([variant], "malformed", 1)

    def test_writer_refuses_bad_bodies(self) -> None:
        with self.assertRaises(ChainError):
            sign_event(ALICE, seq=1, prev=None, type="add_endpoint", body={"id": "x"})


class WireTests(SynchronousTestCase):
    def test_document_primary_mismatch(self) -> None:
        data = dump_document(ALICE.primary, build(ALICE, ("add_endpoint", NATS)))
        with self.assertRaises(ChainError) as caught:
            read_document(data, primary=MALLORY.primary)
        self.assertEqual(caught.exception.code, "wrong_signer")

    def test_document_garbage(self) -> None:
        for data in [
            b"",
            b"\xff",
            b"[]",
            b'{"primary": "x"}',
            b'{"primary":1,"events":[]}',
            b'{"primary":"a","primary":"b","events":[]}',
            b"[" * 100000,
        ]:
            with self.subTest(data=data[:20]), self.assertRaises(ChainError) as caught:
                read_document(data)
            self.assertEqual(caught.exception.code, "malformed")

    def test_jsonl_truncated(self) -> None:
        data = dump_jsonl(build(ALICE, ("add_endpoint", NATS), ("add_endpoint", IROH)))
        with self.assertRaises(ChainError) as caught:
            read_jsonl(data[:-1], ALICE.primary)
        self.assertEqual(caught.exception.code, "malformed")
        self.assertEqual(read_jsonl(b"", ALICE.primary).head_seq, 0)


class WalkTests(SynchronousTestCase):
    def test_remove_endpoint(self) -> None:
        events = build(
            ALICE,
            ("add_endpoint", NATS),
            ("add_endpoint", IROH),
            ("remove_endpoint", bodies.remove_endpoint("nats-1")),
        )
        state = load_chain(ALICE.primary, events)
        self.assertEqual([e.id for e in state.endpoints], ["laptop"])
        self.assertEqual(state.endpoints_for("iroh")[0].node_id, HEX)

    def test_revoke_remove_restores(self) -> None:
        events = build(
            ALICE,
            ("add_endpoint", NATS),
            ("remove_endpoint", bodies.remove_endpoint("nats-1")),
            ("revoke", bodies.revoke(2)),
        )
        state = load_chain(ALICE.primary, events)
        self.assertEqual(state.endpoint("nats-1").url, "wss://kez.lat/nats")
        self.assertEqual(state.revoked, frozenset({2}))

    def test_revoke_add(self) -> None:
        events = build(
            ALICE,
            ("add_endpoint", NATS),
            ("add_claim", bodies.add_claim("github:a")),
            ("revoke", bodies.revoke(1)),
            ("revoke", bodies.revoke(2)),
        )
        state = load_chain(ALICE.primary, events)
        self.assertEqual((state.endpoints, state.claims), ((), ()))

    def test_shared_files_fallback(self) -> None:
        first = bodies.set_shared_files("11" * 32, 10, "https://kez.lat/v1/manifests/alice")
        second = bodies.set_shared_files("22" * 32, 20, "https://kez.lat/v1/manifests/alice")
        events = build(ALICE, ("set_shared_files", first), ("set_shared_files", second))
        self.assertEqual(load_chain(ALICE.primary, events).shared_files.size, 20)
        events.append(next_event(ALICE, events, "revoke", bodies.revoke(2), created_at=T))
        state = load_chain(ALICE.primary, events)
        self.assertEqual(
            (state.shared_files.manifest_blake3, state.shared_files.seq), ("11" * 32, 1)
        )

    def test_readd_replaces(self) -> None:
        moved = bodies.add_endpoint("nats-1", "nats", url="wss://other/nats")
        events = build(ALICE, ("add_endpoint", NATS), ("add_endpoint", moved))
        self.assertEqual(
            [e.url for e in load_chain(ALICE.primary, events).endpoints], ["wss://other/nats"]
        )

    def test_verifier_does_not_mutate_on_failure(self) -> None:
        events = build(ALICE, ("add_endpoint", NATS), ("add_endpoint", IROH))
        verifier = ChainVerifier(ALICE.primary)
        verifier.append(events[0])
        bad = copy.deepcopy(events[1])
        bad["sig"] = "00" * 64
        self.assertRaises(ChainError, verifier.append, bad)
        self.assertEqual(verifier.head_seq, 1)
        verifier.append(events[1])
        self.assertEqual(verifier.head_hash, event_hash(events[1]))
