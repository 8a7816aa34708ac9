"""
NATS JWT encoding and verification (L{kezchat.natsbridge.jwt}).

These check the format in isolation; C{test_nats_callout} checks it where
it matters, against nats-server itself (which decodes every response and
user JWT we sign, and signs every request we decode).
"""

from __future__ import annotations

import base64
import json

from twisted.trial import unittest

from kezchat.natsbridge import jwt
from kezchat.protocol.natskeys import ACCOUNT, SERVER, USER, NKey


def _part(token: str, index: int) -> dict:
    raw = token.split(".")[index]
    return json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))


class EncodeTests(unittest.TestCase):
    def setUp(self) -> None:
        self.issuer = NKey.generate(ACCOUNT)
        self.claims = {"sub": NKey.generate(USER).public, "nats": {"type": "user"}}

    def test_shape(self) -> None:
        """
        Three unpadded base64url parts; the fixed nkey header; C{iss},
        C{iat}, C{jti} and C{nats.version} filled in.
        """
        token = jwt.encode(self.claims, self.issuer, now=1_700_000_000)
        self.assertEqual(token.count("."), 2)
        self.assertNotIn("=", token)
        self.assertEqual(_part(token, 0), {"typ": "JWT", "alg": "ed25519-nkey"})
        body = _part(token, 1)
        self.assertEqual(body["iss"], self.issuer.public)
        self.assertEqual(body["iat"], 1_700_000_000)
        self.assertEqual(body["nats"], {"type": "user", "version": 2})
        self.assertEqual(body["jti"], jwt.claims_id(body))
        self.assertEqual(len(body["jti"]), 52)

    def test_round_trip(self) -> None:
        token = jwt.encode(self.claims, self.issuer)
        claims = jwt.decode(token, [ACCOUNT], "user")
        self.assertEqual(claims["sub"], self.claims["sub"])

    def test_jti_is_base32_of_the_hash(self) -> None:
        """
        The jti is what the Go library computes: unpadded base32 of the
        SHA-512/256 of the claims without it (our base32 is our own code).
        """
        import base64
        import hashlib

        for size in range(0, 300, 7):
            data = b"x" * size
            expected = base64.b32encode(hashlib.new("sha512_256", data).digest())
            self.assertEqual(jwt._claims_id_of(data), expected.decode().rstrip("="))

    def test_subject_required(self) -> None:
        self.assertRaises(ValueError, jwt.encode, {"nats": {}}, self.issuer)

    def test_input_not_mutated(self) -> None:
        jwt.encode(self.claims, self.issuer)
        self.assertEqual(set(self.claims), {"sub", "nats"})
        self.assertNotIn("version", self.claims["nats"])


class DecodeTests(unittest.TestCase):
    def setUp(self) -> None:
        self.issuer = NKey.generate(ACCOUNT)
        self.token = jwt.encode(
            {"sub": "U", "exp": 2_000, "nats": {"type": "user"}}, self.issuer, now=1_000
        )

    def decode(self, token: str | bytes, **kwargs) -> dict:
        kwargs.setdefault("now", 1_500)
        return jwt.decode(token, [ACCOUNT], "user", **kwargs)

    def test_bytes_accepted(self) -> None:
        self.assertEqual(self.decode(self.token.encode())["sub"], "U")

    def test_tampered_claims(self) -> None:
        header, _body, sig = self.token.split(".")
        claims = _part(self.token, 1)
        claims["sub"] = "V"
        forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
        self.assertRaises(jwt.JWTError, self.decode, f"{header}.{forged}.{sig}")

    def test_tampered_signature(self) -> None:
        header, body, sig = self.token.split(".")
        flipped = sig[:-2] + ("AA" if sig[-2:] != "AA" else "BA")
        self.assertRaises(jwt.JWTError, self.decode, f"{header}.{body}.{flipped}")

    def test_reissued_by_other_key(self) -> None:
        """
        Swapping C{iss} for another key breaks the signature.
        """
        other = NKey.generate(ACCOUNT)
        header, _body, sig = self.token.split(".")
        claims = _part(self.token, 1)
        claims["iss"] = other.public
        body = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
        self.assertRaises(jwt.JWTError, self.decode, f"{header}.{body}.{sig}")

    def test_wrong_issuer_role(self) -> None:
        """
        A request must come from a server key, a user JWT from an account.
        """
        self.assertRaises(jwt.JWTError, jwt.decode, self.token, [SERVER], "user", now=1_500)

    def test_wrong_type(self) -> None:
        self.assertRaises(
            jwt.JWTError, jwt.decode, self.token, [ACCOUNT], "authorization_request", now=1_500
        )

    def test_expired(self) -> None:
        self.assertRaises(jwt.JWTError, self.decode, self.token, now=2_001)

    def test_not_yet_valid(self) -> None:
        token = jwt.encode({"sub": "U", "nbf": 3_000, "nats": {"type": "user"}}, self.issuer)
        self.assertRaises(jwt.JWTError, self.decode, token, now=2_000)

    def test_other_algorithm(self) -> None:
        _, body, sig = self.token.split(".")
        header = base64.urlsafe_b64encode(b'{"typ":"JWT","alg":"none"}').decode().rstrip("=")
        self.assertRaises(jwt.JWTError, self.decode, f"{header}.{body}.{sig}")

    def test_garbage(self) -> None:
        for token in [
            "",
            "a",
            "a.b",
            "a.b.c",
            "a.b.c.d",
            "!!!.!!!.!!!",
            "e30.e30.e30",
            b"\xff.\xfe.x",
        ]:
            with self.subTest(token=token):
                self.assertRaises(jwt.JWTError, self.decode, token)

    def test_oversize(self) -> None:
        self.assertRaises(jwt.JWTError, self.decode, "a" * (jwt.MAX_TOKEN + 1))
