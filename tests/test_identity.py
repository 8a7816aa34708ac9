"""
Property tests of the identity primitives (SPEC §2).

These functions decide what is a key, a handle and a valid signature for
the server, the CLI and the web app alike, so the properties are stated
against independent oracles written here (a regex of the grammar, the
C{nkeys} package, the published BIP-39 vectors) rather than against the
module's own constants.
"""

from __future__ import annotations

import json
import re
import string

import nkeys
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from kezchat.errors import KezError
from kezchat.identity import (
    RESERVED_HANDLES,
    Handle,
    InvalidHandle,
    InvalidKey,
    KeyPair,
    canonical_json,
    format_primary,
    mnemonic_to_seed,
    parse_handle,
    parse_primary,
    primary_to_user_nkey,
    seed_to_mnemonic,
    sign_jcs,
    user_nkey_to_primary,
    validate_local,
    verify_bytes,
    verify_jcs,
)
from kezchat.identity.nkeys import decode_public, encode_public
from kezchat.registry import Registry, RegistryPolicy
from tests.support import registration

# -- strategies -------------------------------------------------------------

seeds = st.binary(min_size=32, max_size=32)
keypairs = seeds.map(KeyPair)

#: JSON values JCS can represent: integers in the IEEE-754 safe range,
#: finite floats, strings without lone surrogates.
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_categories=("Cs",)))
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.text(st.characters(blacklist_categories=("Cs",))), inner, max_size=5)
    ),
    max_leaves=20,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=6)

HEAD = string.ascii_lowercase + string.digits
TAIL = HEAD + "_-"
#: the grammar of SPEC §2, written out by hand: generated directly from
#: its two character classes, never filtered
grammar_locals = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(HEAD),
    st.text(alphabet=TAIL, min_size=2, max_size=31),
)
#: an independent statement of the grammar to judge arbitrary text with;
#: explicit classes (no ranges, no \w) and \Z so that "abc\n" cannot pass
GRAMMAR = re.compile(
    r"[abcdefghijklmnopqrstuvwxyz0123456789]"
    r"[abcdefghijklmnopqrstuvwxyz0123456789_\-]{2,31}\Z"
)
#: text that is nearly a handle: grammar characters plus the characters
#: that break naive validators (case, separators, Unicode look-alikes,
#: digits of other scripts, white space, a trailing newline)
TRICKY = "AZ@._-. \t\n\x00/\\%:+é\u212a\u0130\u0131ſ０١ａ\u200b"
near_handles = st.text(alphabet=TAIL + TRICKY, max_size=36)
any_text = near_handles | st.text(max_size=40)


def flip_bit(data: bytes, index: int) -> bytes:
    """
    C{data} with bit C{index} (counting from the first byte's LSB) inverted.
    """
    byte, bit = divmod(index, 8)
    flipped = bytearray(data)
    flipped[byte] ^= 1 << bit
    return bytes(flipped)


# -- canonical JSON ---------------------------------------------------------


class CanonicalJSONTests(SynchronousTestCase):
    @given(json_values)
    def test_round_trip(self, value: object) -> None:
        """
        JCS output is JSON that parses back to an equal value, and
        canonicalising that again yields the same bytes (a fixed point).

        Numbers are read back as JCS (and JavaScript) reads them, as
        doubles: a large float is written in integer notation
        (C{6.6e16} → C{66242887407720980}), which Python's default reader
        would turn into an int that JCS then refuses as unsafe.
        """
        encoded = canonical_json(value)
        decoded = json.loads(encoded, parse_int=float)
        self.assertEqual(decoded, value)
        self.assertEqual(canonical_json(decoded), encoded)

    @given(json_objects, st.randoms(use_true_random=False))
    def test_key_order_is_irrelevant(self, value: dict, rnd) -> None:
        """
        Two dicts with the same items in different insertion orders have
        the same canonical bytes: that is what lets a verifier rebuild the
        signed bytes from whatever JSON parser it uses.
        """
        items = list(value.items())
        rnd.shuffle(items)
        self.assertEqual(canonical_json(dict(items)), canonical_json(value))

    @given(json_objects)
    def test_no_insignificant_white_space(self, value: dict) -> None:
        encoded = canonical_json(value)
        # outside strings there is no space or newline at all
        outside = re.sub(rb'"(?:[^"\\]|\\.)*"', b"", encoded)
        self.assertNotIn(b" ", outside)
        self.assertNotIn(b"\n", outside)

    def test_refuses_what_jcs_cannot_represent(self) -> None:
        for value in (float("nan"), float("inf"), 2**53, -(2**53), {1: "x"}, object()):
            self.assertRaises(ValueError, canonical_json, value)

    def test_known_vector(self) -> None:
        """
        RFC 8785's ordering is by UTF-16 code units, not code points.
        """
        self.assertEqual(
            canonical_json({"\U0001f600": 1, "\ufb33": 2, "a": [1.0, 1e21, -0.0]}),
            '{"a":[1,1e+21,0],"\U0001f600":1,"\ufb33":2}'.encode(),
        )


# -- keys and signatures ----------------------------------------------------


class SignatureTests(SynchronousTestCase):
    @given(keypairs, json_objects)
    def test_sign_verify_round_trip(self, key: KeyPair, payload: dict) -> None:
        signature = key.sign_jcs(payload)
        self.assertRegex(signature, r"^[0-9a-f]{128}\Z")
        self.assertEqual(signature, sign_jcs(key.seed, payload))
        self.assertTrue(verify_jcs(key.primary, payload, signature))
        self.assertTrue(verify_bytes(key.primary, canonical_json(payload), signature))

    @given(keypairs, keypairs, json_objects)
    def test_other_key_does_not_verify(self, key: KeyPair, other: KeyPair, payload: dict) -> None:
        assume(key.seed != other.seed)
        self.assertFalse(verify_jcs(other.primary, payload, key.sign_jcs(payload)))

    @given(keypairs, json_objects, st.data())
    def test_bit_flip_in_signed_bytes_fails(self, key: KeyPair, payload: dict, data) -> None:
        """
        Any single bit flip anywhere in the JCS bytes of a signed payload
        makes verification fail.
        """
        message = canonical_json(payload)
        signature = key.sign_jcs(payload)
        index = data.draw(st.integers(0, len(message) * 8 - 1), label="bit")
        self.assertFalse(verify_bytes(key.primary, flip_bit(message, index), signature))

    @given(keypairs, json_objects, st.integers(0, 64 * 8 - 1))
    def test_bit_flip_in_signature_fails(self, key: KeyPair, payload: dict, index: int) -> None:
        """
        Any single bit flip in the 64 raw signature bytes fails (a flip in
        S can never add a multiple of the group order, so no malleability).
        """
        raw = bytes.fromhex(key.sign_jcs(payload))
        self.assertFalse(verify_jcs(key.primary, payload, flip_bit(raw, index).hex()))

    @given(keypairs, json_objects, st.integers(0, 128 * 8 - 1))
    def test_bit_flip_in_signature_text_fails(
        self, key: KeyPair, payload: dict, index: int
    ) -> None:
        """
        A flip in the hex text fails too, including the flips that only
        change case (C{a} → C{A}) and so decode to the same bytes: a
        signature has one spelling.
        """
        text = key.sign_jcs(payload).encode("ascii")
        flipped = flip_bit(text, index).decode("latin-1")
        self.assertFalse(verify_jcs(key.primary, payload, flipped))

    @given(keypairs, json_objects, st.integers(0, 72 * 8 - 1))
    def test_bit_flip_in_primary_fails(self, key: KeyPair, payload: dict, index: int) -> None:
        signature = key.sign_jcs(payload)
        primary = flip_bit(key.primary.encode("ascii"), index).decode("latin-1")
        self.assertFalse(verify_jcs(primary, payload, signature))

    def test_garbage_signatures_are_false_not_errors(self) -> None:
        key = KeyPair(bytes(32))
        for signature in (None, 1, "", "zz" * 64, "00" * 63, "00" * 65, b"00" * 64, ["00"]):
            self.assertFalse(verify_jcs(key.primary, {}, signature))
        self.assertFalse(verify_jcs(key.primary, {"x": float("nan")}, "00" * 64))
        self.assertFalse(verify_jcs("ed25519:xyz", {}, key.sign_jcs({})))


class PrimaryTests(SynchronousTestCase):
    @given(st.binary(min_size=32, max_size=32))
    def test_round_trip(self, public: bytes) -> None:
        primary = format_primary(public)
        self.assertEqual(primary, "ed25519:" + public.hex())
        self.assertEqual(parse_primary(primary), public)

    @given(
        st.text(max_size=80)
        | st.builds(
            str.__add__,
            st.sampled_from(["ed25519:", "ED25519:", "ed25519", "Ed25519:", "x25519:", ""]),
            st.text("0123456789abcdefABCDEF", min_size=62, max_size=66),
        )
        | st.builds(lambda b: "ed25519:" + b.hex(), st.binary(min_size=32, max_size=32))
    )
    def test_accepts_exactly_lowercase_64_hex(self, text: str) -> None:
        expected = re.fullmatch(r"ed25519:[0123456789abcdef]{64}", text) is not None
        try:
            parse_primary(text)
        except InvalidKey:
            accepted = False
        else:
            accepted = True
        self.assertEqual(accepted, expected, text)

    @given(st.binary(min_size=32, max_size=32), st.integers(0, 63))
    def test_uppercase_refused(self, public: bytes, position: int) -> None:
        hex_text = public.hex()
        assume(hex_text[position] in "abcdef")
        upper = hex_text[:position] + hex_text[position].upper() + hex_text[position + 1 :]
        self.assertRaises(InvalidKey, parse_primary, "ed25519:" + upper)
        self.assertRaises(InvalidKey, parse_primary, "ED25519:" + hex_text)

    def test_wrong_shapes(self) -> None:
        hex64 = "ab" * 32
        for text in (
            hex64,
            "ed25519:" + hex64[:-1],
            "ed25519:" + hex64 + "a",
            "ed25519:" + hex64 + "\n",
            " ed25519:" + hex64,
            "x25519:" + hex64,
            "ed448:" + hex64,
            "ed25519;" + hex64,
            "ed25519:" + "gg" * 32,
            None,
            b"ed25519:" + hex64.encode(),
        ):
            self.assertRaises(InvalidKey, parse_primary, text)
        self.assertRaises(InvalidKey, format_primary, b"\x00" * 31)


# -- handles ----------------------------------------------------------------


def _flip_case(text: str, mask: list[bool]) -> str:
    return "".join(c.upper() if m else c for c, m in zip(text, mask, strict=False))


class HandleTests(SynchronousTestCase):
    @given(grammar_locals)
    def test_grammar_is_accepted(self, local: str) -> None:
        self.assertEqual(validate_local(local), local)

    @settings(max_examples=500)
    @given(any_text)
    def test_accepts_exactly_the_grammar(self, text: str) -> None:
        expected = GRAMMAR.match(text) is not None
        try:
            validate_local(text)
        except InvalidHandle:
            accepted = False
        else:
            accepted = True
        self.assertEqual(accepted, expected, repr(text))

    def test_boundaries(self) -> None:
        for good in ("abc", "a" * 32, "0__", "9-9", "a-_"):
            self.assertEqual(validate_local(good), good)
        for bad in ("ab", "a" * 33, "_ab", "-ab", "Abc", "abc\n", "ab c", "", None, 123, b"abc"):
            self.assertRaises(InvalidHandle, validate_local, bad)

    @given(grammar_locals, st.lists(st.booleans(), min_size=32, max_size=32))
    def test_parse_bare_and_qualified_any_case(self, local: str, mask: list[bool]) -> None:
        typed = _flip_case(local, mask)
        expected = Handle(local, "kez.lat")
        self.assertEqual(parse_handle(typed, "kez.lat"), expected)
        self.assertEqual(parse_handle(typed, "KEZ.LAT"), expected)
        self.assertEqual(parse_handle(f"{typed}@kez.lat", "kez.lat"), expected)
        self.assertEqual(parse_handle(f"{typed}@Kez.LAT", "other.org"), expected)
        self.assertEqual(parse_handle(f"{typed}@other.org", "kez.lat"), Handle(local, "other.org"))
        self.assertEqual(expected.fqhn, f"{local}@kez.lat")

    @settings(max_examples=500)
    @given(
        any_text.filter(lambda t: "@" not in t),
        st.sampled_from(["", "@kez.lat", "@KEZ.lat", "@", "@@kez.lat", "@bad_host", "@kez.lat."]),
    )
    def test_parse_accepts_exactly_the_grammar_in_any_ascii_case(
        self, text: str, suffix: str
    ) -> None:
        """
        Lookups are case-insensitive in the ASCII sense only: a Unicode
        character whose lowercase happens to be ASCII (the Kelvin sign
        U+212A lowers to C{k}) must not resolve to someone's handle.
        The grammar must match the whole string: surrounding white space
        (C{"bob\\n"}) is refused, never trimmed into someone's handle.
        """
        typed = text + suffix
        local = text.lower()
        expected = (
            suffix in ("", "@kez.lat", "@KEZ.lat")
            and typed.isascii()
            and GRAMMAR.fullmatch(local) is not None
        )
        try:
            handle = parse_handle(typed, "kez.lat")
        except InvalidHandle:
            accepted = False
        else:
            accepted = True
            self.assertEqual(handle, Handle(local, "kez.lat"))
        self.assertEqual(accepted, expected, repr(typed))

    def test_parse_refusals(self) -> None:
        for text in (
            "@alice",
            "alice@",
            "alice@-x.org",
            "al",
            "\u212aelvin",
            "kelvin@\u212aez.lat",
            "bob\n",
            " bob",
            "bob@kez.lat\n",
            "bob\n@kez.lat",
            None,
            7,
        ):
            self.assertRaises(InvalidHandle, parse_handle, text, "kez.lat")

    def test_reserved_list(self) -> None:
        """
        Every name SPEC §2 lists is reserved, and every reserved name is a
        well-formed handle (a malformed one would never reach the check).
        """
        spec = {
            "admin",
            "root",
            "support",
            "security",
            "abuse",
            "postmaster",
            "webmaster",
            "hostmaster",
            "noreply",
            "kez",
            "nats",
            "api",
            "www",
            "system",
        }
        self.assertEqual(spec - RESERVED_HANDLES, set())
        for name in RESERVED_HANDLES:
            self.assertEqual(validate_local(name), name)

    def test_registry_refuses_reserved_and_honours_a_configured_list(self) -> None:
        default = Registry(
            None, RegistryPolicy("kez.lat", "https://kez.lat", "http://s"), lambda: 0
        )
        custom = Registry(
            None,
            RegistryPolicy("kez.lat", "https://kez.lat", "http://s", reserved=frozenset({"zed"})),
            lambda: 0,
        )
        key = KeyPair(bytes(range(32)))
        for name in ("admin", "postmaster", "kez"):
            with self.assertRaises(KezError) as caught:
                default.check_registration(registration(key, name, created_at=0))
            self.assertEqual(caught.exception.code, "reserved_handle")
        with self.assertRaises(KezError) as caught:
            custom.check_registration(registration(key, "zed", created_at=0))
        self.assertEqual(caught.exception.code, "reserved_handle")
        self.assertEqual(
            custom.check_registration(registration(key, "admin", created_at=0)).local, "admin"
        )


# -- mnemonic ---------------------------------------------------------------


class MnemonicTests(SynchronousTestCase):
    @given(seeds)
    def test_round_trip(self, seed: bytes) -> None:
        words = seed_to_mnemonic(seed)
        self.assertEqual(len(words.split(" ")), 24)
        self.assertEqual(mnemonic_to_seed(words), seed)
        self.assertEqual(mnemonic_to_seed("  " + words.upper().replace(" ", " \n ") + " "), seed)

    def test_known_vectors(self) -> None:
        """
        BIP-39's reference vectors (trezor/python-mnemonic vectors.json) for
        256-bit entropy: the words encode the seed itself.
        """
        vectors = [
            (bytes(32), "abandon " * 23 + "art"),
            (
                b"\x7f" * 32,
                "legal winner thank year wave sausage worth useful legal winner "
                "thank year wave sausage worth useful legal winner thank year wave "
                "sausage worth title",
            ),
            (b"\xff" * 32, "zoo " * 23 + "vote"),
        ]
        for seed, words in vectors:
            self.assertEqual(seed_to_mnemonic(seed), words)
            self.assertEqual(mnemonic_to_seed(words), seed)

    @given(seeds, st.integers(0, 23), st.sampled_from(["abandon", "zoo", "legal", "abandonx"]))
    def test_damaged_words_refused_or_different(self, seed: bytes, at: int, word: str) -> None:
        """
        Replacing a word either breaks the checksum (refused) or, rarely,
        yields another valid mnemonic, never the original seed silently.
        """
        words = seed_to_mnemonic(seed).split()
        assume(words[at] != word)
        words[at] = word
        try:
            other = mnemonic_to_seed(" ".join(words))
        except ValueError:
            return
        self.assertNotEqual(other, seed)

    def test_wrong_lengths(self) -> None:
        self.assertRaises(ValueError, seed_to_mnemonic, bytes(16))
        self.assertRaises(ValueError, mnemonic_to_seed, "abandon " * 11 + "about")
        self.assertRaises(ValueError, mnemonic_to_seed, "abandon " * 24)


# -- nkeys ------------------------------------------------------------------


class NkeyTests(SynchronousTestCase):
    @given(seeds)
    def test_agrees_with_the_nkeys_package(self, seed: bytes) -> None:
        key = KeyPair(seed)
        theirs = nkeys.from_seed(nkeys.encode_seed(seed, nkeys.PREFIX_BYTE_USER)).public_key
        ours = primary_to_user_nkey(key.primary)
        self.assertEqual(ours.encode("ascii"), theirs)
        self.assertTrue(ours.startswith("U"))
        self.assertEqual(user_nkey_to_primary(ours), key.primary)

    @given(st.binary(min_size=32, max_size=32))
    def test_round_trip(self, public: bytes) -> None:
        primary = format_primary(public)
        self.assertEqual(user_nkey_to_primary(primary_to_user_nkey(primary)), primary)

    @given(
        st.binary(min_size=32, max_size=32),
        st.integers(0, 55),
        st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"),
    )
    def test_damage_is_detected(self, public: bytes, at: int, char: str) -> None:
        """
        Changing any one character is caught by the prefix check or the
        CRC-16, never decoded to a different key.
        """
        encoded = primary_to_user_nkey(format_primary(public))
        assume(encoded[at] != char)
        damaged = encoded[:at] + char + encoded[at + 1 :]
        try:
            got = user_nkey_to_primary(damaged)
        except InvalidKey:
            return
        self.fail(f"{damaged} decoded to {got}")

    @given(st.binary(min_size=32, max_size=32))
    def test_other_key_types_refused(self, public: bytes) -> None:
        account = encode_public(nkeys.PREFIX_BYTE_ACCOUNT, public)
        self.assertTrue(account.startswith("A"))
        self.assertEqual(decode_public(nkeys.PREFIX_BYTE_ACCOUNT, account), public)
        self.assertRaises(InvalidKey, user_nkey_to_primary, account)

    def test_garbage(self) -> None:
        for text in ("", "U", "u" * 56, "!" * 56, "U" * 57, "é"):
            self.assertRaises(InvalidKey, user_nkey_to_primary, text)
