"""
Sigchains (SPEC §7): append-only logs of events signed by one primary key.

Writers build events with L{sign_event} (or L{next_event}, which numbers
and links them); readers call L{load_chain} (or L{read_document} on the
bytes a sig-server returned) and get either a L{ChainState} — live
endpoints, claims, the shared-files pointer — or a L{ChainError} whose
C{code} says exactly what is wrong and C{seq} where.
"""

from kezchat.sigchain import bodies
from kezchat.sigchain.chain import ChainVerifier, check_signed, verify_chain
from kezchat.sigchain.errors import ChainError
from kezchat.sigchain.events import (
    Event,
    check_event_shape,
    event_hash,
    next_event,
    sign_event,
    unsigned,
    utc_now,
)
from kezchat.sigchain.state import (
    ChainState,
    Claim,
    Endpoint,
    SharedFiles,
    load_chain,
    walk,
)
from kezchat.sigchain.wire import (
    JSONL_MEDIA_TYPE,
    dump_document,
    dump_jsonl,
    parse_document,
    parse_jsonl,
    read_document,
    read_jsonl,
)

__all__ = [
    "JSONL_MEDIA_TYPE",
    "ChainError",
    "ChainState",
    "ChainVerifier",
    "Claim",
    "Endpoint",
    "Event",
    "SharedFiles",
    "bodies",
    "check_event_shape",
    "check_signed",
    "dump_document",
    "dump_jsonl",
    "event_hash",
    "load_chain",
    "next_event",
    "parse_document",
    "parse_jsonl",
    "read_document",
    "read_jsonl",
    "sign_event",
    "unsigned",
    "utc_now",
    "verify_chain",
    "walk",
]
