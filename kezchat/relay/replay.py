"""
Replayed sends: the same signed C{POST /v1/messages} sent again.

An C{X-KEZ-Auth} signature stays valid for the clock window (±60 s), so
whoever captures a send could repeat it, to this server process or to any
other one sharing the database. A send that names no idempotency key gets
one derived from its signature, stored with the message in the same
transaction (the database's primary key on (sender, key) decides, whatever
the number of processes): a replay then finds it and is answered with the
first send's seq (200), storing nothing.

Such keys are longer than any key a client may choose (at most
L{kezchat.relay.sendrequest.MAX_IDEMPOTENCY_KEY} characters), so the two never
meet; and they are only needed while the signature could still be
accepted, so the retention sweep forgets them after L{REPLAY_WINDOW}.
"""

from __future__ import annotations

from kezchat.protocol.auth import AUTH_SKEW, AuthValue

#: the prefix of a key derived from a signature
PREFIX = "sig:"

#: seconds after a message was stored during which its signature could
#: still be accepted: its timestamp is at most L{AUTH_SKEW} ahead of the
#: clock when stored, and is accepted up to L{AUTH_SKEW} after it (plus a
#: margin for clocks of several instances)
REPLAY_WINDOW = 3 * AUTH_SKEW


def implicit_key(auth: AuthValue) -> str:
    """
    The idempotency key of a send that gave none: its whole signature,
    which names the exact request (method, path, body hash, timestamp).
    """
    return PREFIX + auth.signature


def is_implicit(key: str) -> bool:
    return key.startswith(PREFIX) and len(key) == len(PREFIX) + 128
