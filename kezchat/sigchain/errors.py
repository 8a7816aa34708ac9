"""
The one exception sigchain verification raises, and why it can be trusted
to say what went wrong.
"""

from __future__ import annotations

# Stable reason codes; servers and clients branch on these, not on messages.
MALFORMED = "malformed"  # not an event: bad JSON, wrong keys, types or body shape
WRONG_SIGNER = "wrong_signer"  # signed by a key other than the chain's primary
BAD_SIGNATURE = "bad_signature"  # the signature does not verify
BAD_SEQ = "bad_seq"  # seq is not the previous seq + 1
BAD_PREV = "bad_prev"  # prev is not the hash of the previous event
BAD_REVOKE = "bad_revoke"  # revoke names an event that cannot be revoked
FORK = "fork"  # a different event already holds this seq (raised by stores)

CODES = frozenset({MALFORMED, WRONG_SIGNER, BAD_SIGNATURE, BAD_SEQ, BAD_PREV, BAD_REVOKE, FORK})


class ChainError(ValueError):
    """
    A sigchain, or an event offered for one, failed verification.

    @ivar code: one of L{CODES}, the precise reason.
    @ivar seq: the position (1-based, equal to the seq the event should
        carry) at which verification stopped, or C{None} when the failure
        is not about one event (the document around the events).
    @ivar message: a sentence for humans.
    """

    def __init__(self, code: str, message: str, seq: int | None = None) -> None:
        if code not in CODES:
            # a programming error, but one that must not vanish under -O
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(code, message, seq)
        self.code = code
        self.message = message
        self.seq = seq

    def __str__(self) -> str:
        where = f" at seq {self.seq}" if self.seq is not None else ""
        return f"{self.code}{where}: {self.message}"
