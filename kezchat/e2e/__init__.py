"""
The end-to-end layer of KEZ chat: what clients put inside the envelopes the
server relays without reading.

Everything here is client-side and pure: the CLI, the tests, the example
client and (through the interop vectors) the web app share one definition
of how a message is sealed, signed, opened and checked.
"""

from kezchat.e2e.envelope import (
    ENVELOPE_VERSION,
    EnvelopeError,
    OpenedEnvelope,
    open_envelope,
    open_own_envelope,
    seal_envelope,
)
from kezchat.e2e.plaintext import (
    CHUNK_BYTES,
    INLINE_MAX_BYTES,
    MAX_CHUNKED_BYTES,
    ChunkAssembler,
    PlaintextError,
    chunked_file,
    file_share,
    inline_file,
    parse_plaintext,
    receipt,
    text_message,
)

__all__ = [
    "CHUNK_BYTES",
    "ENVELOPE_VERSION",
    "INLINE_MAX_BYTES",
    "MAX_CHUNKED_BYTES",
    "ChunkAssembler",
    "EnvelopeError",
    "OpenedEnvelope",
    "PlaintextError",
    "chunked_file",
    "file_share",
    "inline_file",
    "open_envelope",
    "open_own_envelope",
    "parse_plaintext",
    "receipt",
    "seal_envelope",
    "text_message",
]
