"""
The one exception manifest verification raises.
"""

from __future__ import annotations

MALFORMED = "malformed"  # not a manifest: bad JSON, wrong keys, types or entries
TOO_LARGE = "too_large"  # more than MAX_MANIFEST_BYTES
BAD_SIGNATURE = "bad_signature"  # the signature does not verify against the owner
WRONG_OWNER = "wrong_owner"  # the owner is not the key the reader expected
BLAKE3_MISMATCH = "blake3_mismatch"  # not the blob the sigchain commits to

CODES = frozenset({MALFORMED, TOO_LARGE, BAD_SIGNATURE, WRONG_OWNER, BLAKE3_MISMATCH})


class ManifestError(ValueError):
    """
    A manifest blob failed verification.

    @ivar code: one of L{CODES}, the precise reason.
    @ivar message: a sentence for humans.
    """

    def __init__(self, code: str, message: str) -> None:
        if code not in CODES:
            # a programming error, but one that must not vanish under -O
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"
