"""
The little a file transfer needs from a peer-to-peer network.

Iroh is reached only through these interfaces (L{kezchat.p2p.irohnode} is
the implementation), because its Python bindings are young: the rest of
the client speaks of nodes, tickets, connections and streams, and a
binding that changes shape is one module's problem.

Everything here is asyncio coroutines: the bindings are asyncio-native,
and the client runs on Twisted's asyncio reactor, so one event loop
carries both.  Twisted code calls in through
L{kezchat.compat.aio.deferred_from_coroutine}.
"""

from __future__ import annotations

from typing import Protocol


class TransportError(Exception):
    """
    The network failed us; C{str()} says how, for a person.
    """


class PeerUnreachable(TransportError):
    """
    No connection to the peer could be made (offline, or wrong address).
    """


class StreamEnded(TransportError):
    """
    The peer finished or reset a stream before sending what was expected.
    """


#: what a stream sends: any contiguous bytes-like value (a sender reuses
#: its C{bytearray} buffers once a write has returned)
Buffer = bytes | bytearray | memoryview


class SendStream(Protocol):
    async def write(self, data: Buffer) -> None:
        """Send all of C{data}; it may be reused once this returns."""

    async def finish(self) -> None:
        """Say that nothing more will be sent."""


class RecvStream(Protocol):
    async def read(self, limit: int) -> bytes:
        """Up to C{limit} bytes; C{b""} once the peer has finished."""

    async def read_exact(self, size: int) -> bytes:
        """Exactly C{size} bytes. @raise StreamEnded: if the stream ends first."""


class Connection(Protocol):
    #: the peer's node id: the raw ed25519 public key it proved it holds
    remote_id: bytes

    async def open_stream(self) -> tuple[SendStream, RecvStream]:
        """A new bidirectional stream."""

    async def accept_stream(self) -> tuple[SendStream, RecvStream]:
        """The next bidirectional stream the peer opens."""

    def close(self, reason: bytes = b"") -> None:
        """Close now; unread data is lost for both sides."""

    async def closed(self) -> None:
        """Fires when the connection is closed, by either side."""


class Node(Protocol):
    #: this node's id: the raw ed25519 public key of its secret seed
    node_id: bytes

    def ticket(self) -> str:
        """How a peer reaches this node: its id and direct addresses."""

    async def accept(self) -> Connection | None:
        """The next incoming connection, C{None} once the node is closed."""

    async def connect(self, ticket: str, timeout: float) -> Connection:
        """
        @raise PeerUnreachable: within C{timeout} seconds.
        @raise TransportError: for a malformed ticket.
        """

    async def close(self) -> None:
        """Stop accepting and drop every connection."""
