"""
The registration document (C{POST /v1/register}): its constants, which
the registry checks, and building its signed body, as every client sends it.
"""

from __future__ import annotations

import time
from typing import Any

from kezchat.identity.keys import SIGNATURE_ALG, KeyPair
from kezchat.timeutil import format_rfc3339

REGISTRATION_TAG = "handle_registration"
REGISTRATION_TYPE = "kez.chat.handle_registration"


def registration_payload(
    key: KeyPair, handle: str, server: str, created_at: str | None = None
) -> dict[str, Any]:
    """
    The payload a registration signs: C{handle} is the lowercase local part.
    """
    return {
        "type": REGISTRATION_TYPE,
        "version": 1,
        "handle": handle,
        "primary": key.primary,
        "server": server,
        "created_at": format_rfc3339(time.time()) if created_at is None else created_at,
    }


def sign_registration(key: KeyPair, payload: dict[str, Any]) -> dict[str, Any]:
    """
    Wrap C{payload} with its tag and C{key}'s signature over its JCS bytes.
    """
    return {
        "kez": REGISTRATION_TAG,
        "payload": payload,
        "signature": {"alg": SIGNATURE_ALG, "key": key.primary, "sig": key.sign_jcs(payload)},
    }


def signed_registration(
    key: KeyPair, handle: str, server: str, created_at: str | None = None
) -> dict[str, Any]:
    """
    A complete registration body for C{handle}@C{server} held by C{key}.
    """
    return sign_registration(key, registration_payload(key, handle, server, created_at))
