"""
NATS nkeys: the same Ed25519 public key, spelt as NATS spells it.

A user nkey is base32(prefix byte C{U} ‖ 32 key bytes ‖ CRC-16) without
padding, so a KEZ primary I{is} a NATS user credential (SPEC §2).
"""

import base64
import binascii

import nkeys

from kezchat.identity.keys import InvalidKey, format_primary, parse_primary


def encode_public(prefix_byte: int, public_key: bytes) -> str:
    """
    Encode a raw public key with an nkeys prefix byte (C{nkeys.PREFIX_BYTE_*}).
    """
    raw = bytes([prefix_byte]) + public_key
    raw += nkeys.crc16_checksum(raw)
    return base64.b32encode(raw).decode("ascii").rstrip("=")


def decode_public(prefix_byte: int, encoded: str) -> bytes:
    """
    The 32 raw key bytes of an encoded public nkey, checking prefix and CRC.
    """
    try:
        padded = encoded + "=" * (-len(encoded) % 8)
        raw = base64.b32decode(padded.encode("ascii"))
    except (binascii.Error, UnicodeEncodeError, ValueError) as e:
        raise InvalidKey("not an nkey") from e
    if len(raw) != 35 or raw[0] != prefix_byte:
        raise InvalidKey("wrong nkey type or length")
    body, crc = raw[:-2], raw[-2:]
    if nkeys.crc16_checksum(body) != crc:
        raise InvalidKey("nkey checksum mismatch")
    return body[1:]


def primary_to_user_nkey(primary: str) -> str:
    """
    C{ed25519:<hex>} → C{U…}.
    """
    return encode_public(nkeys.PREFIX_BYTE_USER, parse_primary(primary))


def user_nkey_to_primary(nkey: str) -> str:
    """
    C{U…} → C{ed25519:<hex>}.
    """
    return format_primary(decode_public(nkeys.PREFIX_BYTE_USER, nkey))
