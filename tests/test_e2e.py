"""
The end-to-end envelope and plaintexts: round trips, every way an envelope
can be wrong, and the limits of attachments.
"""

from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from kezchat.e2e import (
    CHUNK_BYTES,
    INLINE_MAX_BYTES,
    MAX_CHUNKED_BYTES,
    ChunkAssembler,
    EnvelopeError,
    PlaintextError,
    chunked_file,
    inline_file,
    open_envelope,
    parse_plaintext,
    seal_envelope,
    text_message,
)
from kezchat.identity.keys import KeyPair

ALICE = KeyPair(bytes(range(32)))
BOB = KeyPair(bytes(range(32, 64)))
CAROL = KeyPair(bytes([0x42] * 32))


class EnvelopeTests(SynchronousTestCase):
    @settings(max_examples=25, deadline=None)
    @given(text=st.text())
    def test_round_trip(self, text: str) -> None:
        envelope = seal_envelope(ALICE, BOB.primary, text_message(text))
        opened = open_envelope(envelope, BOB, expected_sender=ALICE.primary)
        self.assertEqual(opened.plaintext, {"type": "text", "text": text})
        self.assertEqual(opened.sender, ALICE.primary)

    def test_fresh_salt_each_time(self) -> None:
        one = seal_envelope(ALICE, BOB.primary, text_message("x"))
        two = seal_envelope(ALICE, BOB.primary, text_message("x"))
        self.assertNotEqual(one["salt"], two["salt"])
        self.assertNotEqual(one["ct"], two["ct"])

    def test_deterministic_with_fixed_salt_and_time(self) -> None:
        args = (ALICE, BOB.primary, text_message("x"))
        fixed = {"ts": "2026-05-25T03:00:00Z", "salt": b"\x01" * 16}
        self.assertEqual(seal_envelope(*args, **fixed), seal_envelope(*args, **fixed))

    def test_sender_can_not_read_for_a_third(self) -> None:
        envelope = seal_envelope(ALICE, BOB.primary, text_message("x"))
        error = self.assertRaises(EnvelopeError, open_envelope, envelope, CAROL)
        self.assertEqual(error.code, "not_for_us")

    def test_pinned_key_mismatch(self) -> None:
        envelope = seal_envelope(ALICE, BOB.primary, text_message("x"))
        error = self.assertRaises(
            EnvelopeError, open_envelope, envelope, BOB, expected_sender=CAROL.primary
        )
        self.assertEqual(error.code, "sender_mismatch")

    @settings(max_examples=60, deadline=None)
    @given(data=st.data())
    def test_any_changed_field_is_refused(self, data: st.DataObject) -> None:
        envelope = seal_envelope(ALICE, BOB.primary, text_message("secret"))
        field = data.draw(st.sampled_from(sorted(envelope)))
        original = envelope[field]
        if isinstance(original, int):
            replacement: object = data.draw(st.integers().filter(lambda n: n != original))
        else:
            position = data.draw(st.integers(0, len(original) - 1))
            alphabet = string.ascii_letters + string.digits + "-_:"
            char = data.draw(st.sampled_from(alphabet).filter(lambda c: c != original[position]))
            replacement = original[:position] + char + original[position + 1 :]
        tampered = {**envelope, field: replacement}
        self.assertRaises(EnvelopeError, open_envelope, tampered, BOB)

    @settings(max_examples=40, deadline=None)
    @given(
        value=st.one_of(
            st.none(),
            st.integers(),
            st.text(),
            st.lists(st.integers()),
            st.dictionaries(st.text(max_size=5), st.text(max_size=5)),
        )
    )
    def test_garbage_is_malformed(self, value: object) -> None:
        error = self.assertRaises(EnvelopeError, open_envelope, value, BOB)
        self.assertEqual(error.code, "malformed")

    def test_plaintext_not_an_object(self) -> None:
        # sealed by hand: a valid envelope around a JSON array
        from kezchat.e2e import envelope as module

        sealed = seal_envelope(ALICE, BOB.primary, {"type": "text", "text": "x"})
        salt = module.b64url_decode(sealed["salt"])
        secrets = module.derive(ALICE, BOB.primary, salt)
        ct = module.ChaCha20Poly1305(secrets.key).encrypt(
            secrets.nonce, b"[1]", module.canonical_json(module.header_of(sealed))
        )
        forged = {k: v for k, v in sealed.items() if k != "sig"}
        forged["ct"] = module.b64url_encode(ct)
        forged["sig"] = ALICE.sign_jcs(forged)
        error = self.assertRaises(EnvelopeError, open_envelope, forged, BOB)
        self.assertEqual(error.code, "bad_plaintext")


class PlaintextTests(SynchronousTestCase):
    def test_inline_limit(self) -> None:
        parse_plaintext(inline_file("a.bin", "application/octet-stream", b"x" * INLINE_MAX_BYTES))
        self.assertRaises(PlaintextError, inline_file, "a", "b", b"x" * (INLINE_MAX_BYTES + 1))

    def test_chunked_any_order(self) -> None:
        data = bytes(range(256)) * (3 * CHUNK_BYTES // 256 + 7)
        header, chunks = chunked_file("f.bin", "application/octet-stream", data)
        self.assertEqual(header["n"], len(chunks))
        assembler = ChunkAssembler(header)
        for chunk in reversed(chunks):
            self.assertFalse(assembler.complete)
            assembler.add(chunk)
        self.assertEqual(assembler.assemble(), data)

    def test_chunked_limit(self) -> None:
        self.assertRaises(PlaintextError, chunked_file, "f", "m", b"x" * (MAX_CHUNKED_BYTES + 1))

    def test_chunked_bad_bytes(self) -> None:
        header, chunks = chunked_file("f.bin", "m", b"abc" * 50000)
        assembler = ChunkAssembler(header)
        for chunk in chunks[:-1]:
            assembler.add(chunk)
        self.assertRaises(PlaintextError, assembler.assemble)
        assembler.add({**chunks[-1], "data": chunks[0]["data"]})
        self.assertRaises(PlaintextError, assembler.assemble)

    def test_names_are_plain(self) -> None:
        for name in ("../x", "a/b", "a\\b", "", "x" * 300):
            self.assertRaises(
                PlaintextError, parse_plaintext, inline_file(name, "text/plain", b"x")
            )

    def test_unknown_types_pass(self) -> None:
        self.assertEqual(parse_plaintext({"type": "poll", "q": 1}), {"type": "poll", "q": 1})

    def test_wrong_types(self) -> None:
        for bad in (
            {"type": "text"},
            {"type": "text", "text": 1},
            {"type": "file", "mode": "inline", "name": "a", "mime": "m", "size": 2, "data": "YQ"},
            {"type": "file", "mode": "weird", "name": "a", "mime": "m"},
            {"type": "file_chunk", "file_id": "x", "i": -1, "data": ""},
            {
                "type": "file_share",
                "name": "a",
                "size": True,
                "blake3": "0" * 64,
                "ticket": "t",
                "key": "k",
            },
        ):
            self.assertRaises(PlaintextError, parse_plaintext, bad)
