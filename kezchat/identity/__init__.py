"""
Identity primitives of KEZ chat (SPEC §2): keys, canonical JSON, signatures,
handles, mnemonics and nkeys.

Everything here is a pure function of its arguments, so the server, the CLI
and the tests all share one definition of what a valid key, handle or
signature is.
"""

from kezchat.identity.handles import (
    RESERVED_HANDLES,
    Handle,
    InvalidHandle,
    parse_handle,
    validate_local,
)
from kezchat.identity.jcs import canonical_json
from kezchat.identity.keys import (
    InvalidKey,
    KeyPair,
    format_primary,
    parse_primary,
    sign_bytes,
    sign_jcs,
    verify_bytes,
    verify_jcs,
)
from kezchat.identity.mnemonic import mnemonic_to_seed, seed_to_mnemonic
from kezchat.identity.nkeys import primary_to_user_nkey, user_nkey_to_primary

__all__ = [
    "RESERVED_HANDLES",
    "Handle",
    "InvalidHandle",
    "InvalidKey",
    "KeyPair",
    "canonical_json",
    "format_primary",
    "mnemonic_to_seed",
    "parse_handle",
    "parse_primary",
    "primary_to_user_nkey",
    "seed_to_mnemonic",
    "sign_bytes",
    "sign_jcs",
    "user_nkey_to_primary",
    "validate_local",
    "verify_bytes",
    "verify_jcs",
]
