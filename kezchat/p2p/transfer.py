"""
The file-transfer protocol between two nodes (ALPN C{kez-chat/files/1}).

One connection per download, one bidirectional stream on it:

    fetcher → sender   32 bytes: the raw BLAKE3 digest of the ciphertext wanted
    sender → fetcher   1 status byte: 0 here it comes, 1 not offered, 2 not for you
                       then, after 0, the ciphertext (its length follows from the
                       offered size, see L{kezchat.p2p.crypt}), and the end of stream
    fetcher → sender   1 byte: 0 verified and saved, 1 failed; end of stream

The sender closes the connection once it has read that byte, and the
fetcher waits for that close: a QUIC close discards data in flight, so the
side that reads last is the one that closes.

A sender serves only the node whose id is the offer's recipient: the node
id is the recipient's primary key, proven by the QUIC handshake.  The
ciphertext would be useless to anyone else anyway; this keeps it from
being fetched at all.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from twisted.logger import Logger

from kezchat import tempfiles
from kezchat.p2p.crypt import (
    CHUNK,
    MAX_SIZE,
    PIECE,
    DecryptError,
    FileEncryptor,
    PieceCheck,
    piece_sizes,
)
from kezchat.p2p.transport import (
    Connection,
    Node,
    PeerUnreachable,
    SendStream,
    TransportError,
)

_log = Logger()

SENDING = b"\0"
NOT_OFFERED = b"\1"
NOT_FOR_YOU = b"\2"
ACK_OK = b"\0"
ACK_FAILED = b"\1"

#: pieces moved per call into the bindings: every call costs a Rust
#: future, thread hops and a copy into a fresh Rust buffer, so fewer,
#: larger calls go faster (16 x 256 KiB)
BATCH = 16
#: batches in flight on each side: one on the wire while the others are
#: encrypted (sender) or checked and written (fetcher); bounds the memory
#: a transfer holds to DEPTH x BATCH pieces, whatever the file's size
DEPTH = 3
#: plaintext bytes a fetcher writes between two flushes to disk: the
#: writing-back overlaps the transfer instead of all waiting for the final
#: fsync (about half a second per GiB here), and the dirty pages a large
#: download leaves in memory stay bounded
FLUSH_EVERY = 64 * 1024 * 1024
#: data only, where the system has it (macOS has no fdatasync)
_flush_data: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)

#: seconds a peer may stay silent mid-protocol before it is given up on
IDLE_TIMEOUT = 30.0
#: seconds each dial attempt may take: a handshake takes milliseconds on a
#: LAN; an offline peer gives no answer at all (QUIC over UDP), so a short
#: attempt is what tells the user quickly that they are waiting
DIAL_TIMEOUT = 3.0
#: seconds between dial attempts while the sender is offline
RETRY_INTERVAL = 1.0
#: seconds to wait for the other side's close once the exchange is over
CLOSE_TIMEOUT = 5.0


class FetchError(Exception):
    """
    A download failed in a way a person can act on; C{str()} says how.
    Nothing was left at the target path.
    """


@dataclass(frozen=True)
class Offer:
    """
    A file this node serves: the ciphertext of C{path} under C{key}, which
    must digest to C{blake3}, for the node C{recipient}.
    """

    blake3: str
    path: str
    key: bytes
    size: int
    recipient: bytes


@dataclass(frozen=True)
class Download:
    """
    What a fetcher knows from a C{file_share} offer.
    """

    blake3: str
    size: int
    key: bytes
    ticket: str


async def _within(awaitable: Awaitable[Any], seconds: float) -> Any:
    """
    Await C{awaitable} for at most C{seconds} (no extra task per call: this
    runs once per piece).
    """
    try:
        async with asyncio.timeout(seconds):
            return await awaitable
    except TimeoutError:
        raise TransportError(f"the peer was silent for {seconds:g} s") from None


async def _close_after_peer(connection: Connection, reason: bytes) -> None:
    try:
        await asyncio.wait_for(connection.closed(), CLOSE_TIMEOUT)
    except (TimeoutError, TransportError):
        pass
    connection.close(reason)


class FileServer:
    """
    Serves offers to the nodes they are for, until L{stop}.

    @param lookup: the offer for a hex digest, or C{None}.
    @param delivered: called with each offer a fetcher confirmed it saved.
    """

    def __init__(
        self,
        node: Node,
        lookup: Callable[[str], Offer | None],
        delivered: Callable[[Offer], None] = lambda offer: None,
    ) -> None:
        self._node = node
        self._lookup = lookup
        self._delivered = delivered
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepting: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._accepting = asyncio.ensure_future(self._accept_loop())

    async def _accept_loop(self) -> None:
        while (connection := await self._node.accept()) is not None:
            task = asyncio.ensure_future(self._serve(connection))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        """
        Stop accepting and abandon transfers in progress.
        """
        tasks = list(self._tasks)
        if self._accepting is not None:
            tasks.append(self._accepting)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _serve(self, connection: Connection) -> None:
        try:
            send, recv = await _within(connection.accept_stream(), IDLE_TIMEOUT)
            digest = await _within(recv.read_exact(32), IDLE_TIMEOUT)
            offer = self._lookup(digest.hex())
            if offer is None:
                await send.write(NOT_OFFERED)
            elif offer.recipient != connection.remote_id:
                await send.write(NOT_FOR_YOU)
            else:
                await send.write(SENDING)
                await self._send_file(offer, send)
            await send.finish()
            ack = await _within(recv.read(1), 4 * IDLE_TIMEOUT)
            if offer is not None and ack == ACK_OK:
                self._delivered(offer)
        except (TransportError, OSError) as e:
            peer = connection.remote_id.hex()
            _log.info("file transfer to {peer} ended: {why}", peer=peer, why=e)
        finally:
            connection.close(b"done")

    async def _send_file(self, offer: Offer, send: SendStream) -> None:
        """
        Send the offer's ciphertext: a worker thread encrypts into a ring
        of L{DEPTH} batch buffers while the event loop hands full ones to
        the transport.  A buffer is refilled only once its write is done
        (the bindings copy it when the write starts), so nothing is
        encrypted more than L{DEPTH} batches ahead.
        """
        loop = asyncio.get_running_loop()
        worker = _worker()
        pieces: FileEncryptor | None = None
        try:
            pieces = await loop.run_in_executor(
                worker, FileEncryptor, offer.path, offer.key, offer.size
            )
            filling: deque[tuple[bytearray, asyncio.Future[int]]] = deque()
            for _ in range(DEPTH):
                buffer = bytearray(BATCH * PIECE)
                filling.append(
                    (buffer, loop.run_in_executor(worker, pieces.encrypt_into, buffer, BATCH))
                )
            while filling:
                buffer, filled = filling.popleft()
                size = await filled
                if not size:
                    break
                await send.write(memoryview(buffer)[:size] if size < len(buffer) else buffer)
                filling.append(
                    (buffer, loop.run_in_executor(worker, pieces.encrypt_into, buffer, BATCH))
                )
        finally:
            if pieces is not None:
                # after whatever encryption is still queued on the worker
                worker.submit(pieces.close)
            worker.shutdown(wait=False)


def _worker() -> ThreadPoolExecutor:
    """
    One thread for a transfer's file I/O and cryptography, off the
    reactor: pieces are handled in order, and buffers are recycled by one
    thread (a shared pool spreads them over many malloc arenas, which shows
    as resident memory that varies from run to run).
    """
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="kez-p2p")


def _batches(sizes: Iterator[int]) -> Iterator[list[int]]:
    """
    C{sizes} in lists of up to L{BATCH}.
    """
    batch: list[int] = []
    for size in sizes:
        batch.append(size)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


class _Sink:
    """
    The temporary file a download goes to, beside its final path so the
    last step is an atomic rename.  Blocking methods: run off the reactor,
    on one thread (they share one plaintext buffer).
    """

    def __init__(self, out: str, check: PieceCheck) -> None:
        directory = os.path.dirname(os.path.abspath(out))
        # what a download killed midway left here, then a short name of our
        # own (the final name may be near the file system's limit)
        tempfiles.clean_stale(directory, ".part")
        fd, self.temp = tempfiles.create(directory, "kez", ".part")
        self._file = os.fdopen(fd, "wb", buffering=0)
        self._check = check
        self._plain = memoryview(bytearray(BATCH * CHUNK))
        self._unflushed = 0

    def write(self, cipher: bytes, sizes: list[int]) -> int:
        """
        Check and decrypt the pieces in C{cipher}, of C{sizes}, and write
        their plaintext in one call.
        """
        size = self._check.open_into(cipher, sizes, self._plain)
        done = 0
        while done < size:
            done += self._file.write(self._plain[done:size]) or 0
        self._unflushed += size
        if self._unflushed >= FLUSH_EVERY:
            _flush_data(self._file.fileno())
            self._unflushed = 0
        return size

    def commit(self, out: str) -> None:
        """
        Give the finished file its name, never replacing a file that
        appeared at C{out} during the download (a link fails if the name
        is taken; the temporary file is then removed).

        @raise FileExistsError: C{out} exists now.
        """
        self._check.finish()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        try:
            os.link(self.temp, out)
        finally:
            os.unlink(self.temp)
        directory = os.open(os.path.dirname(self.temp), os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a crash
        finally:
            os.close(directory)

    def discard(self) -> None:
        self._file.close()
        try:
            os.unlink(self.temp)
        except FileNotFoundError:
            pass


async def dial(
    node: Node, ticket: str, timeout: float, waiting: Callable[[], None] = lambda: None
) -> Connection:
    """
    Connect to C{ticket}'s node, retrying while it is offline.

    @param waiting: called once, when the first attempt fails.
    @raise FetchError: if it did not answer within C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    told = False
    while True:
        remaining = deadline - time.monotonic()
        try:
            return await node.connect(ticket, max(0.5, min(DIAL_TIMEOUT, remaining)))
        except PeerUnreachable:
            pass
        if not told:
            told = True
            waiting()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError(f"the sender did not come online within {timeout:g} s")
        await asyncio.sleep(min(RETRY_INTERVAL, remaining))


async def fetch(
    node: Node,
    download: Download,
    out: str,
    *,
    timeout: float,
    waiting: Callable[[], None] = lambda: None,
    progress: Callable[[int], None] = lambda done: None,
    idle_timeout: float = IDLE_TIMEOUT,
) -> None:
    """
    Download, verify and decrypt an offered file to C{out}, atomically.

    @param timeout: seconds to keep retrying while the sender is offline.
    @param progress: called with the number of plaintext bytes of each
        piece as it is saved.
    @param idle_timeout: seconds the sender may stay silent mid-transfer.
    @raise FetchError: on any failure; nothing is then left at C{out}.
    """
    if not 0 <= download.size <= MAX_SIZE:
        raise FetchError("the offer names an impossible size")
    if os.path.lexists(out):
        raise FetchError(f"{out} already exists; choose another --out")
    try:
        connection = await dial(node, download.ticket, timeout, waiting)
    except TransportError as e:  # not an offline peer: a ticket that does not parse
        raise FetchError(f"the offer's ticket is unusable ({e})") from None
    loop = asyncio.get_running_loop()
    worker = _worker()
    sink: _Sink | None = None
    send: SendStream | None = None
    saving: deque[asyncio.Future[int]] = deque()
    try:
        send, recv = await _within(connection.open_stream(), idle_timeout)
        await send.write(bytes.fromhex(download.blake3))
        status = await _within(recv.read_exact(1), idle_timeout)
        if status == NOT_OFFERED:
            raise FetchError("the sender no longer offers this file")
        if status == NOT_FOR_YOU:
            raise FetchError("the sender offers this file to someone else")
        if status != SENDING:
            raise FetchError("the sender answered in a protocol this client does not know")
        check = PieceCheck(download.key, download.size, download.blake3)
        sink = await loop.run_in_executor(worker, _Sink, out, check)
        for batch in _batches(piece_sizes(download.size)):
            cipher = await _within(recv.read_exact(sum(batch)), idle_timeout)
            # check, decrypt and write these pieces while the next ones arrive
            saving.append(loop.run_in_executor(worker, sink.write, cipher, batch))
            if len(saving) >= DEPTH:
                progress(await saving.popleft())
        while saving:
            progress(await saving.popleft())
        if await _within(recv.read(1), idle_timeout):
            raise FetchError("the sender sent more than it offered; nothing was saved")
        await loop.run_in_executor(worker, sink.commit, out)
        sink = None
        await send.write(ACK_OK)
        await send.finish()
        send = None
        await _close_after_peer(connection, b"done")
    except DecryptError as e:
        raise FetchError(f"the file failed verification ({e}); nothing was saved") from None
    except TransportError as e:
        raise FetchError(f"the transfer was cut short ({e}); nothing was saved") from None
    except FileExistsError:
        raise FetchError(
            f"{out} appeared during the download; it was left alone and nothing was saved"
        ) from None
    except OSError as e:
        raise FetchError(f"cannot write {out}: {e.strerror or e}; nothing was saved") from None
    finally:
        if saving:
            await asyncio.gather(*saving, return_exceptions=True)
        if sink is not None:
            await loop.run_in_executor(worker, sink.discard)
        if send is not None:
            try:
                await send.write(ACK_FAILED)
                await send.finish()
            except TransportError:
                pass
        connection.close(b"done")
        worker.shutdown(wait=False)
