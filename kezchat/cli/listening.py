"""
Receiving: the C{listen} command's machinery.

Messages come from the SSE stream (resumed with C{Last-Event-ID} from this
home's cursor, across restarts of the CLI and of the server) or, with
C{--nats}, from the account's durable JetStream consumer. Every message
is saved durably before it is shown and before the cursor moves past it;
it is verified (signature, and the sender's pinned key) and decrypted, and
one that fails is shown with a warning and C{"verified": false}, never
dropped.
"""

from __future__ import annotations

import json
from argparse import Namespace
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.task import LoopingCall, deferLater
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure

from kezchat.cli.attachments import FileSaver, PlaintextError, write_new_file
from kezchat.cli.context import Context
from kezchat.cli.device import device_name
from kezchat.cli.errors import EXIT_USAGE, CliError
from kezchat.cli.home import Account
from kezchat.cli.itemkinds import OUT, counts_toward_count, direction_of, read_item, render
from kezchat.cli.messages import Reader
from kezchat.cli.natsconnect import nats_connect
from kezchat.cli.output import visible
from kezchat.cli.receipts import ReceiptSender
from kezchat.cli.received import NATS, SSE, UNDELIVERABLE, message_id
from kezchat.client.errors import ServerError, Unreachable
from kezchat.client.sse import Event
from kezchat.client.stream import StreamConnection, open_stream
from kezchat.compat.aio import deferred_from_coroutine
from kezchat.identity.keys import KeyPair

#: seconds without a byte (the server pings every 15 s) before reconnecting
STREAM_SILENCE = 45.0
#: most items saved with one fsync
BATCH = 256
#: queued items at which the stream is paused, and below which it resumes
QUEUE_HIGH = 1024
QUEUE_LOW = 256
#: first and largest pause between reconnection attempts
RECONNECT_FIRST = 0.5
RECONNECT_MAX = 3.0


class Listener:
    """
    Shows and saves messages, in batches in arrival order, and decides
    when C{listen} is done (C{--count}, C{--timeout}).
    """

    def __init__(
        self,
        ctx: Context,
        reader: Reader,
        transport: str,
        count: int | None,
        saver: FileSaver | None = None,
        receipts: ReceiptSender | None = None,
    ) -> None:
        self.ctx = ctx
        self.reader = reader
        self.transport = transport
        self.remaining = count
        self.saver = saver
        #: sends C{delivered} receipts for what was stored (C{None}: off)
        self.receipts = receipts
        self.finished: Deferred[None] = Deferred()
        #: who waits for something else or the finish (L{until}): told
        #: of the finish, and forgotten once they stop waiting
        self._waiting: set[Deferred[None]] = set()
        #: what this home has saved already (see L{load}): message id →
        #: (transport, seq) it came with
        self.seen: dict[str, tuple[str, Any]] = {}
        self.saved_upto = 0

    async def load(self) -> None:
        """
        Read what this home already saved (off the reactor thread).
        """
        received = self.ctx.received
        self.seen = await deferToThread(received.seen)
        self.saved_upto = await deferToThread(received.cursor, self.transport)

    def _is_new(self, item: dict[str, Any]) -> bool:
        """
        Whether C{item} is a message not shown before. The same envelope
        again under another seq of the same transport is a replay: said
        once on stderr, never shown as a message. (The same seq again, or
        the same message over the other transport, is an ordinary
        duplicate and passes in silence.)
        """
        key = message_id(item)
        prior = self.seen.get(key)
        if prior is None:
            self.seen[key] = (self.transport, item.get("seq"))
            return True
        via, seq = prior
        if key.startswith(UNDELIVERABLE):
            return False  # the marked copy and the server's notice: said once
        if via == self.transport and seq != item.get("seq") and not key.startswith(via + ":"):
            self.ctx.out.warn(
                f"message #{visible(item.get('seq'))} repeats message #{visible(seq)} (the same"
                " signed envelope): a replay, not shown again"
            )
        return False

    def finish(self) -> None:
        if not self.finished.called:
            self.finished.callback(None)
        for waiter in list(self._waiting):
            if not waiter.called:
                waiter.callback(None)

    async def until(self, event: Deferred[Any]) -> None:
        """
        Wait until C{event} fires or this listener finishes, whichever is
        first (without consuming C{event}'s result). Nothing stays behind
        on C{finished}: a reconnecting stream waits here once per
        connection, for as long as C{listen} runs.
        """
        if self.finished.called:
            return
        waiter: Deferred[None] = Deferred()

        def fire(result: Any) -> Any:
            if not waiter.called:
                waiter.callback(None)
            return result

        event.addBoth(fire)
        self._waiting.add(waiter)
        try:
            await waiter
        finally:
            self._waiting.discard(waiter)

    async def deliver(self, items: list[dict[str, Any]]) -> int:
        """
        Save, then show, a batch of items in arrival order, skipping any
        seen before: one fsync for the batch, and the cursor moves only
        once the batch is durable.

        @return: how many of C{items} were consumed — all of them, unless
            C{--count} was reached first (the rest stay unsaved, for the
            next listen). C{--count} counts messages received: one's own
            sent copies and receipts are shown, not counted.
        """
        if self.finished.called:
            return 0
        await self.reader.refresh()
        fresh: list[tuple[dict[str, Any], Any]] = []
        consumed = counted = 0
        for item in items:
            if self.remaining is not None and counted >= self.remaining:
                break
            consumed += 1
            if not self._is_new(item):
                continue
            message = await read_item(self.reader, item)
            fresh.append((item, message))
            if counts_toward_count(message):
                counted += 1
        seqs = [i["seq"] for i in items[:consumed] if isinstance(i.get("seq"), int)]
        upto = max(seqs, default=0)
        if fresh or upto > self.saved_upto:
            await deferToThread(
                self.ctx.received.save_many, [i for i, _ in fresh], self.transport, upto
            )
            self.saved_upto = max(self.saved_upto, upto)
        own = self.reader.account.get("fqhn")
        for _, message in fresh:
            if not message.verified:
                who = message.sender or message.from_primary or "an unknown sender"
                self.ctx.out.warn(
                    f"message #{message.seq} from {who} is not verified: {message.warning}"
                )
            line, human = render(message, own)
            saved = await self._save_file(message)
            if saved is not None:
                line["saved"] = saved
                human += f" (saved as {saved})"
            self.ctx.out.emit(line, human)
        if self.receipts is not None and fresh:
            self.receipts.delivered([message for _, message in fresh])
        if self.remaining is not None:
            self.remaining -= counted
            if self.remaining <= 0:
                self.finish()
        return consumed

    async def _save_file(self, message: Any) -> str | None:
        """
        With C{--save-files}: the path written for a verified file message
        that completes a file. A file that cannot be written (the name,
        a full disk) is a warning for this message; C{listen} goes on.
        """
        if self.saver is None or not message.verified or not message.plaintext:
            return None
        if direction_of(message.item) == OUT:
            return None  # one's own file, sent from here or another device
        try:
            complete = self.saver.take(message.from_primary, message.plaintext)
        except PlaintextError as e:
            self.ctx.out.warn(f"message #{message.seq}: the file is not what was announced: {e}")
            return None
        if complete is None:
            return None
        name, data = complete
        try:
            path = await deferToThread(write_new_file, self.saver.directory, name, data)
        except OSError as e:
            self.ctx.out.warn(
                f"message #{message.seq}: cannot write {name} into {self.saver.directory}:"
                f" {e.strerror or e}; the file is not saved"
            )
            return None
        return str(path)


async def _file_saver(ctx: Context, reader: Reader, directory: str) -> FileSaver:
    """
    A saver that already knows the pieces earlier runs received.
    """
    saver = FileSaver(Path(directory).expanduser())
    await reader.refresh()
    earlier = []
    for item in await deferToThread(lambda: list(ctx.received.items())):
        if direction_of(item) == OUT:
            continue  # one's own files are not pieces to assemble
        message = await reader.read(item)
        if message.verified and message.plaintext and message.from_primary:
            earlier.append((message.from_primary, message.plaintext))
    saver.remember(earlier)
    return saver


async def listen(ctx: Context, args: Namespace) -> None:
    if args.count is not None and args.count < 1:
        raise CliError("--count must be at least 1", EXIT_USAGE)
    if args.timeout is not None and args.timeout <= 0:
        raise CliError("--timeout must be positive", EXIT_USAGE)
    if args.nats and args.ack:
        raise CliError("--ack applies to the HTTP inbox; over NATS the consumer acks", EXIT_USAGE)
    account = ctx.account()
    keypair = await ctx.keypair()
    reader = Reader(ctx, keypair, account)
    saver = await _file_saver(ctx, reader, args.save_files) if args.save_files else None
    receipts = None if args.no_receipts else ReceiptSender(ctx, keypair, account)
    listener = Listener(ctx, reader, NATS if args.nats else SSE, args.count, saver, receipts)
    try:
        await listener.load()
        ctx.on_interrupt(listener.finish)
        if args.timeout is not None:
            timer = ctx.reactor.callLater(args.timeout, listener.finish)
            ctx.on_close(lambda: timer.cancel() if timer.active() else None)
        if args.nats:
            await _listen_nats(ctx, keypair, args.nats, listener)
        else:
            await _listen_sse(ctx, keypair, account, listener, args.ack)
    finally:
        if receipts is not None:
            await receipts.flush()


async def _listen_sse(
    ctx: Context, keypair: KeyPair, account: Account, listener: Listener, ack: bool
) -> None:
    acker = _Acker(ctx, keypair, account["fqhn"], listener) if ack else None
    await _SseLink(ctx, keypair, account["fqhn"], listener, acker).run()


class _SseLink:
    """
    C{listen} over SSE: one stream at a time, resumed after the last seq
    seen, reconnected with back-off until the listener finishes; what
    arrives is queued for the listener, which saves it in batches, and the
    stream is paused while too much waits.
    """

    def __init__(
        self, ctx: Context, keypair: KeyPair, fqhn: str, listener: Listener, acker: _Acker | None
    ) -> None:
        self.ctx = ctx
        self.keypair = keypair
        self.fqhn = fqhn
        self.listener = listener
        self.acker = acker
        #: the newest seq received: where a reconnection resumes
        self.last = listener.saved_upto
        #: a stream was open once: later failures are reconnected, not fatal
        self.connected = False
        #: the stream open now, if any
        self.connection: StreamConnection | None = None
        self.queue: DeferredQueue[dict[str, Any] | None] = DeferredQueue()
        #: the pause before the next attempt: doubled while the server is
        #: unreachable, back to the first once a stream is open
        self.delay = RECONNECT_FIRST

    def on_event(self, event: Event) -> None:
        if event.event != "message":
            return
        try:
            item = json.loads(event.data)
        except ValueError:
            self.ctx.out.warn(f"the server sent an unreadable event (id {event.id}); skipped")
            return
        if isinstance(item, dict) and isinstance(item.get("seq"), int):
            self.last = max(self.last, item["seq"])
            self.queue.put(item)
            if len(self.queue.pending) >= QUEUE_HIGH and self.connection is not None:
                self.connection.pause()  # the server holds the rest meanwhile

    async def consume(self) -> None:
        """
        Hand what arrives to the listener in batches, until the end mark.
        """
        queue, listener = self.queue, self.listener
        while not listener.finished.called:
            first = await queue.get()
            if first is None:
                return
            batch, end = [first], False
            while queue.pending and len(batch) < BATCH:
                item = queue.pending.pop(0)
                if item is None:
                    end = True
                    break
                batch.append(item)
            if self.connection is not None and len(queue.pending) < QUEUE_LOW:
                self.connection.resume()
            await listener.deliver(batch)
            if end:
                return

    async def run(self) -> None:
        consumer = Deferred.fromCoroutine(self.consume())

        def consumer_failed(failure: Failure) -> Failure:
            self.listener.finish()
            return failure

        consumer.addErrback(consumer_failed)
        try:
            while not self.listener.finished.called:
                connection = await self.open()
                if connection is None:
                    continue
                if not await self.hold(connection):
                    break
                await _sleep_or_finish(
                    self.ctx, self.listener, min(connection.retry or self.delay, self.delay)
                )
        finally:
            self.queue.put(None)
            await consumer
            if self.acker is not None:
                await self.acker.flush()

    async def open(self) -> StreamConnection | None:
        """
        Open the stream after L{last}: the connection, or C{None} after
        waiting L{delay} when the server cannot be reached for now.

        @raise CliError: the first connection failed, or the server
            refused the stream.
        """
        chat = self.ctx.chat()
        try:
            connection = await open_stream(
                chat.stream_agent,
                chat.stream_url(self.keypair, self.fqhn),
                self.on_event,
                last_event_id=self.last,
            )
        except Unreachable as e:
            if not self.connected:
                raise CliError(
                    f"{e}: is the chat server running? check --server / KEZ_CHAT_SERVER_URL"
                ) from None
            await _sleep_or_finish(self.ctx, self.listener, self.delay)
            self.delay = min(self.delay * 2, RECONNECT_MAX)
            return None
        except ServerError as e:
            if self.connected and e.status >= 500:
                await _sleep_or_finish(self.ctx, self.listener, self.delay)
                return None
            raise CliError(f"the server refused the stream: {e.message} ({e.code})") from None
        if self.connected:
            self.ctx.out.info("reconnected")
        self.connected = True
        self.connection = connection
        self.delay = RECONNECT_FIRST
        return connection

    async def hold(self, connection: StreamConnection) -> bool:
        """
        Keep C{connection} until it ends or the listener finishes, cutting
        it when the server falls silent. Whether to reconnect.
        """
        watchdog = LoopingCall(_check_silence, self.ctx, connection)
        watchdog.clock = self.ctx.reactor
        watchdog.start(5.0, now=False)
        try:
            await self.listener.until(connection.ended)
        finally:
            watchdog.stop()
        if self.listener.finished.called:
            await connection.close()
            return False
        if connection.error is not None:
            self.ctx.out.warn(f"{connection.error}; dropped the stream, reconnecting")
        self.ctx.out.info("connection lost; reconnecting")
        return True


def _check_silence(ctx: Context, connection: Any) -> None:
    if ctx.reactor.seconds() - connection.last_activity > STREAM_SILENCE:
        connection.close()


async def _sleep_or_finish(ctx: Context, listener: Listener, seconds: float) -> None:
    await listener.until(deferLater(ctx.reactor, seconds, lambda: None))


class _Acker:
    """
    With C{--ack}: deletes from the server what has been saved here, at
    most once a second and once more at the end.
    """

    def __init__(self, ctx: Context, keypair: KeyPair, fqhn: str, listener: Listener) -> None:
        self.ctx = ctx
        self.keypair = keypair
        self.fqhn = fqhn
        self.listener = listener
        self.acked = 0
        self.loop = LoopingCall(self._tick)
        self.loop.clock = ctx.reactor
        self.loop.start(1.0, now=False)

    def _tick(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._ack(quiet=True))

    async def _ack(self, quiet: bool) -> None:
        upto = self.listener.saved_upto
        if upto <= self.acked:
            return
        try:
            await self.ctx.chat().acknowledge(self.keypair, self.fqhn, upto)
            self.acked = upto
        except (Unreachable, ServerError) as e:
            if not quiet:
                self.ctx.out.warn(f"could not delete saved messages from the server: {e}")

    async def flush(self) -> None:
        if self.loop.running:
            self.loop.stop()
        await self._ack(quiet=False)


async def nats_item(reader: Reader, message: Any) -> dict[str, Any]:
    """
    The relay item of a message read from JetStream: a sent copy (on
    C{kez.inbox.<me>.out.<recipient>}) says so, and whom it went to.
    """
    item = {
        "seq": message.seq,
        "from": await reader.handle_of(message.from_primary),
        "from_primary": message.from_primary,
        "direction": message.direction,
        "envelope": message.envelope,
        "created_at": message.created_at,
    }
    if message.direction == OUT and message.to_primary is not None:
        item["to"] = await reader.handle_of(message.to_primary)
        item["to_primary"] = message.to_primary
    return item


async def _listen_nats(ctx: Context, keypair: KeyPair, url: str, listener: Listener) -> None:
    from kezchat.client.natsclient import fetch_inbox, open_inbox

    device = await deferToThread(device_name, ctx.home)
    nc = await nats_connect(ctx, url, keypair, reconnect=True, device=device)
    try:
        sub = await deferred_from_coroutine(open_inbox(nc, keypair, device))
    except Exception as e:
        raise CliError(f"NATS refused the inbox consumer ({e or type(e).__name__})") from None
    while not listener.finished.called:
        size = 64 if listener.remaining is None else max(1, min(64, listener.remaining))
        batch = deferred_from_coroutine(fetch_inbox(sub, batch=size, timeout=1.0))
        try:
            messages = await batch
        except Exception as e:  # broker gone for now: nats-py reconnects by itself
            if listener.finished.called:
                break
            ctx.out.info(f"NATS: {e or type(e).__name__}; retrying")
            await _sleep_or_finish(ctx, listener, 1.0)
            continue
        items = [await nats_item(listener.reader, message) for message in messages]
        consumed = await listener.deliver(items)
        for message in messages[:consumed]:
            await deferred_from_coroutine(message.ack())
        # not ours to keep: handed back at once for the next listen
        for message in messages[consumed:]:
            await deferred_from_coroutine(message.msg.nak())
