"""
NATS JWTs (the C{ed25519-nkey} flavour of RFC 7519), just enough of them
for auth callout.

A token is C{base64url(header) "." base64url(claims) "." base64url(sig)},
unpadded, where the header is C{{"typ":"JWT","alg":"ed25519-nkey"}} and the
signature is raw Ed25519, by the key named in the claims' C{iss}, over the
ASCII bytes of C{header "." claims}. The claims' C{jti} is the unpadded
base32 of the SHA-512/256 hash of the claims serialised without it, as the
Go library computes it (nats-server does not check it; we keep it for
parity).

This module is deliberately free of Twisted and of nats-py: it turns claims
into tokens and back and is tested directly against nats-server.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError
from nacl.exceptions import ValueError as NaclValueError

from kezchat.identity.keys import InvalidKey
from kezchat.protocol.natskeys import NKey, public_key_bytes

HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
_ENCODED_HEADER = base64.urlsafe_b64encode(
    json.dumps(HEADER, separators=(",", ":")).encode()
).rstrip(b"=")

# Upper bound on a token we are willing to parse: an authorization request
# is a couple of KiB (more with client certificates); this guards only
# against absurd input.
MAX_TOKEN = 256 * 1024


class JWTError(ValueError):
    """
    A token is malformed, badly signed, of the wrong kind or expired.
    """


def _b64encode(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _b64decode(data: bytes) -> bytes:
    try:
        return base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4))
    except (binascii.Error, ValueError) as e:
        raise JWTError("bad base64url") from e


def _dumps(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def claims_id(claims: Mapping[str, Any]) -> str:
    """
    The C{jti} of C{claims}: base32 (unpadded) of SHA-512/256 of their JSON.
    """
    return _claims_id_of(_dumps({k: v for k, v in claims.items() if k != "jti"}))


_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
#: every 10-bit value as its two base32 digits
_B32_PAIRS = [a + b for a in _B32 for b in _B32]


def _claims_id_of(serialised: bytes) -> str:
    # base64.b32encode is pure Python (a loop per 5 bytes) and showed in
    # the callout's profile; a 32-byte digest is 256 bits, which unpadded
    # base32 spells as 52 digits (260 bits, the last 4 zero): 26 pairs
    digest = hashlib.new("sha512_256", serialised).digest()
    n = int.from_bytes(digest, "big") << 4
    return "".join([_B32_PAIRS[(n >> shift) & 1023] for shift in range(250, -10, -10)])


def encode(claims: Mapping[str, Any], signer: NKey, now: float | None = None) -> str:
    """
    Sign C{claims} with C{signer}, filling in C{iss}, C{iat} and C{jti}.

    C{claims} must carry C{sub} and the C{nats} section; C{nats.version} is
    set to 2 (the v2 format, signature over header and claims).
    """
    body = dict(claims)
    if not body.get("sub"):
        raise ValueError("a NATS JWT needs a subject")
    nats = dict(body.get("nats") or {})
    nats["version"] = 2
    body["nats"] = nats
    body["iss"] = signer.public
    body["iat"] = int(time.time() if now is None else now)
    body.pop("jti", None)
    return encode_serialised(_dumps(body), signer)


def encode_serialised(unsigned: bytes, signer: NKey) -> str:
    """
    Sign claims already serialised as a JSON object (with C{iss}, C{iat}
    and C{nats.version} in place, no C{jti}): the callout's hot path
    builds its claims from pre-rendered parts instead of a dict.

    One serialisation serves both the hash and the token: the jti is
    spliced in as the last member.
    """
    jti = _claims_id_of(unsigned)
    payload = unsigned[:-1] + b',"jti":"' + jti.encode("ascii") + b'"}'
    signed = _ENCODED_HEADER + b"." + _b64encode(payload)
    return (signed + b"." + _b64encode(signer.sign(signed))).decode("ascii")


#: encoded headers seen to be valid (a server sends the same one every
#: time): such a header is not parsed again
_GOOD_HEADERS: set[bytes] = {_ENCODED_HEADER}


def _check_header(header_b64: bytes) -> None:
    if header_b64 in _GOOD_HEADERS:
        return
    try:
        header = json.loads(_b64decode(header_b64))
    except (UnicodeDecodeError, ValueError) as e:
        raise JWTError("header or claims are not JSON") from e
    if not isinstance(header, dict) or header.get("alg") != HEADER["alg"]:
        raise JWTError("not an ed25519-nkey JWT")
    if str(header.get("typ", "")).upper() != "JWT":
        raise JWTError("not a JWT")
    if len(_GOOD_HEADERS) < 16:
        _GOOD_HEADERS.add(header_b64)


def decode(
    token: str | bytes,
    issuer_prefixes: Iterable[int],
    claim_type: str,
    now: float | None = None,
) -> dict[str, Any]:
    """
    Parse and verify a token; return its claims.

    @param issuer_prefixes: the nkey roles allowed to have signed it (a
        request comes from a server C{N…}; a user JWT from an account C{A…}).
    @param claim_type: the expected C{nats.type}.
    @raise JWTError: if anything at all is wrong. The signature is checked
        against the C{iss} the token itself names; whether that issuer is
        trusted is the caller's decision.
    """
    raw = token.encode("ascii", "replace") if isinstance(token, str) else bytes(token)
    if len(raw) > MAX_TOKEN:
        raise JWTError("token too large")
    parts = raw.strip().split(b".")
    if len(parts) != 3:
        raise JWTError("expected three dot-separated parts")
    header_b64, claims_b64, sig_b64 = parts
    _check_header(header_b64)
    try:
        claims = json.loads(_b64decode(claims_b64))
    except (UnicodeDecodeError, ValueError) as e:
        raise JWTError("header or claims are not JSON") from e
    if not isinstance(claims, dict) or not isinstance(claims.get("nats"), dict):
        raise JWTError("claims carry no nats section")
    if claims["nats"].get("type") != claim_type:
        raise JWTError(f"expected a {claim_type} claim")
    issuer = claims.get("iss")
    key = None
    for prefix in issuer_prefixes:
        try:
            key = public_key_bytes(prefix, issuer) if isinstance(issuer, str) else None
        except InvalidKey:
            continue
        break
    if key is None:
        raise JWTError("issuer is not a key of an accepted role")
    signature = _b64decode(sig_b64)
    if len(signature) != 64:
        raise JWTError("bad signature")
    try:
        crypto_sign_open(signature + header_b64 + b"." + claims_b64, key)
    except (BadSignatureError, NaclValueError) as e:
        raise JWTError("bad signature") from e
    current = time.time() if now is None else now
    exp = claims.get("exp")
    if isinstance(exp, int) and exp and current > exp:
        raise JWTError("expired")
    nbf = claims.get("nbf")
    if isinstance(nbf, int) and nbf and current < nbf:
        raise JWTError("not yet valid")
    return claims
