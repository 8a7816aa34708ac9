"""
L{kezchat.p2p.transport} over Iroh (the C{iroh} Python bindings, pinned).

A node binds a QUIC endpoint whose identity is the user's KEZ seed, so its
node id is their primary public key.  Relays and discovery are off (the
minimal preset): a ticket carries the node id and explicit direct
addresses, and peers dial those.  Note that every endpoint sends one UPnP
SSDP multicast when it starts, which the bindings cannot turn off.

Facts about the bindings this module works around: a dial to an offline
peer fails only after 30 s, so L{IrohNode.connect} bounds it itself;
C{str(IrohError)} is empty, so errors are described from C{kind()} and
C{message()}; and outgoing bytes are copied one at a time unless
L{kezchat.p2p.uniffi_patch} is applied, which L{IrohNode.bind} does.
"""

from __future__ import annotations

import asyncio

from iroh import Connection as _IrohConnection
from iroh import (
    Endpoint,
    EndpointAddr,
    EndpointOptions,
    EndpointTicket,
    IrohError,
    RelayMode,
    preset_minimal,
)
from iroh import RecvStream as _IrohRecv
from iroh import SendStream as _IrohSend

from kezchat.p2p import uniffi_patch
from kezchat.p2p.transport import Buffer, PeerUnreachable, StreamEnded, TransportError

#: the application protocol: KEZ chat file transfer, version 1
ALPN = b"kez-chat/files/1"


def describe(error: IrohError) -> str:
    """
    A readable sentence for an C{IrohError} (whose C{str()} is empty).
    """
    try:
        return f"{error.kind().name.lower()}: {error.message()}"
    except Exception:
        return repr(error)


class _Send:
    def __init__(self, stream: _IrohSend) -> None:
        self._stream = stream

    async def write(self, data: Buffer) -> None:
        try:
            # the generated code takes any bytes-like value (it checks with
            # memoryview) and copies it before its first await
            await self._stream.write_all(data)  # type: ignore[arg-type]
        except IrohError as e:
            raise StreamEnded(describe(e)) from None

    async def finish(self) -> None:
        try:
            await self._stream.finish()
        except IrohError as e:
            raise StreamEnded(describe(e)) from None


class _Recv:
    def __init__(self, stream: _IrohRecv) -> None:
        self._stream = stream

    async def read(self, limit: int) -> bytes:
        try:
            return await self._stream.read(limit)
        except IrohError as e:
            raise StreamEnded(describe(e)) from None

    async def read_exact(self, size: int) -> bytes:
        try:
            return await self._stream.read_exact(size)
        except IrohError as e:
            raise StreamEnded(describe(e)) from None


class _Connection:
    def __init__(self, connection: _IrohConnection) -> None:
        self._connection = connection
        self.remote_id = connection.remote_id().to_bytes()

    async def open_stream(self) -> tuple[_Send, _Recv]:
        try:
            both = await self._connection.open_bi()
        except IrohError as e:
            raise TransportError(describe(e)) from None
        return _Send(both.send()), _Recv(both.recv())

    async def accept_stream(self) -> tuple[_Send, _Recv]:
        try:
            both = await self._connection.accept_bi()
        except IrohError as e:
            raise StreamEnded(describe(e)) from None
        return _Send(both.send()), _Recv(both.recv())

    def close(self, reason: bytes = b"") -> None:
        self._connection.close(0, reason)

    async def closed(self) -> None:
        await self._connection.closed()


def _options(seed: bytes, bind: str) -> EndpointOptions:
    return EndpointOptions(
        preset=preset_minimal(),
        relay_mode=RelayMode.disabled(),
        bind_addr=bind,
        alpns=[ALPN],
        secret_key=seed,
    )


class IrohNode:
    """
    An Iroh endpoint speaking L{ALPN}.  Build it with L{IrohNode.bind}.
    """

    def __init__(self, endpoint: Endpoint, advertise: list[str] | None = None) -> None:
        self._endpoint = endpoint
        self.node_id = endpoint.id().to_bytes()
        self._advertise = advertise

    @classmethod
    async def bind(
        cls, seed: bytes, bind: str = "0.0.0.0:0", advertise: list[str] | None = None
    ) -> IrohNode:
        """
        Start a node whose identity is C{seed} (32 bytes), listening on
        C{bind} (C{host:port}; port 0 picks one).

        @param advertise: the direct addresses to put in tickets; by
            default those the endpoint reports.
        @raise TransportError: if the address cannot be bound.
        """
        uniffi_patch.apply()
        try:
            endpoint = await Endpoint.bind(_options(seed, bind))
        except IrohError as e:
            raise TransportError(f"cannot listen on {bind}: {describe(e)}") from None
        return cls(endpoint, advertise)

    def addresses(self) -> list[str]:
        """
        The direct addresses tickets carry.
        """
        if self._advertise is not None:
            return list(self._advertise)
        return self._endpoint.addr().direct_addresses()

    def ticket(self) -> str:
        addr = EndpointAddr(self._endpoint.id(), None, self.addresses())
        return str(EndpointTicket.from_addr(addr))

    async def accept(self) -> _Connection | None:
        while True:
            incoming = await self._endpoint.accept_next()
            if incoming is None:
                return None
            try:
                return _Connection(await (await incoming.accept()).connect())
            except IrohError:
                # a handshake that failed (wrong ALPN, peer gone): next one
                continue

    async def connect(self, ticket: str, timeout: float) -> _Connection:
        try:
            addr = EndpointTicket.from_string(ticket).endpoint_addr()
        except IrohError as e:
            raise TransportError(f"not a node ticket ({describe(e)})") from None
        try:
            connection = await asyncio.wait_for(self._endpoint.connect(addr, ALPN), timeout)
        except TimeoutError:
            raise PeerUnreachable(f"no answer within {timeout:g} s") from None
        except IrohError as e:
            raise PeerUnreachable(describe(e)) from None
        return _Connection(connection)

    async def close(self) -> None:
        await self._endpoint.close()


def ticket_node_id(ticket: str) -> bytes:
    """
    The node id a ticket names.

    @raise TransportError: if it is not a ticket.
    """
    try:
        return EndpointTicket.from_string(ticket).endpoint_addr().id().to_bytes()
    except IrohError as e:
        raise TransportError(f"not a node ticket ({describe(e)})") from None
