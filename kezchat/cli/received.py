"""
Received messages and the listen cursors, kept in the home.

Each message is stored as the relay delivered it (the envelope still
encrypted) on one line of C{messages.jsonl}, fsynced before the cursor
moves past it, and its signature goes to C{seen.jsonl} (the newest
L{MAX_SEEN}), against which a replayed envelope is recognised; the cursor
(the last seq durably saved, per transport) is what C{listen} resumes
from after a restart, and the only thing C{--ack} ever deletes up to.
A crash between the two writes means a message may be stored twice,
never lost: readers de-duplicate by envelope signature.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

from kezchat.cli.home import Home, read_json, write_atomic, write_json

#: cursor names: the relay's per-recipient seq (SSE) and JetStream's stream seq
SSE = "sse"
NATS = "nats"
#: envelope signatures remembered to recognise a replay
MAX_SEEN = 100_000


#: the prefix of an undeliverable sent copy's id (L{message_id})
UNDELIVERABLE = "undeliverable:"


def is_undeliverable(item: dict[str, Any]) -> bool:
    """
    Whether C{item} is a sent copy another server never took.
    """
    return item.get("direction") == "out" and item.get("undeliverable") is True


def message_id(item: dict[str, Any]) -> str:
    """
    What identifies one message across transports: its envelope signature
    (the relay seq and the JetStream seq of one message differ). A sent
    copy marked undeliverable (and the server's notice that repeats it,
    SPEC §11.5) is another item than the copy as first sent: it is shown
    once more, to say the message never arrived.
    """
    envelope = item.get("envelope")
    sig = envelope.get("sig") if isinstance(envelope, dict) else None
    if isinstance(sig, str) and sig:
        if is_undeliverable(item):
            return UNDELIVERABLE + sig
        return sig
    return f"{item.get('via', SSE)}:{item.get('seq')}"


class ReceivedStore:
    """
    C{messages.jsonl} and C{cursor.json} of one home.
    """

    def __init__(self, home: Home) -> None:
        self.home = home

    def cursor(self, transport: str = SSE) -> int:
        data = read_json(self.home.cursor_path, {})
        value = data.get(transport, 0) if isinstance(data, dict) else 0
        return value if isinstance(value, int) and value >= 0 else 0

    def set_cursor(self, seq: int, transport: str = SSE) -> None:
        data = read_json(self.home.cursor_path, {})
        if not isinstance(data, dict):
            data = {}
        data[transport] = seq
        write_json(self.home.cursor_path, data)

    def save(self, item: dict[str, Any], transport: str = SSE) -> None:
        """
        Append C{item} durably, then move the cursor to its seq
        (blocking: fsync; call off the reactor thread).
        """
        self.save_many([item], transport)

    def save_many(
        self, items: list[dict[str, Any]], transport: str = SSE, upto: int | None = None
    ) -> None:
        """
        Append C{items} with one fsync, then move the cursor to C{upto}
        (default: their highest seq) if that is ahead of it.
        """
        if items:
            self.home.ensure()
            data = "".join(
                json.dumps({**item, "via": transport}, separators=(",", ":")) + "\n"
                for item in items
            ).encode("utf-8")
            fd = os.open(self.home.messages_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._remember(items, transport)
        if upto is None:
            upto = max((i["seq"] for i in items if isinstance(i.get("seq"), int)), default=0)
        if upto > self.cursor(transport):
            self.set_cursor(upto, transport)

    def items(self) -> Iterator[dict[str, Any]]:
        """
        Every stored item, oldest first, each message once. A torn last
        line (a crash mid-write) is skipped.
        """
        seen: set[str] = set()
        if not self.home.messages_path.exists():
            return
        with open(self.home.messages_path, "rb") as f:
            for raw in f:
                try:
                    item = json.loads(raw)
                except ValueError:
                    continue
                if not isinstance(item, dict):
                    continue
                key = message_id(item)
                if key in seen:
                    continue
                seen.add(key)
                yield item

    def seen(self) -> dict[str, tuple[str, Any]]:
        """
        The envelopes this home has received: message id → (transport,
        seq) it first came with; the newest L{MAX_SEEN} of them, from
        C{seen.jsonl} (or, in a home older than that file, from the
        stored messages). Replays are recognised against this.
        """
        seen: dict[str, tuple[str, Any]] = {}
        path = self.home.seen_path
        if path.exists():
            with open(path, "rb") as f:
                for raw in f:
                    try:
                        entry = json.loads(raw)
                        seen[str(entry["id"])] = (str(entry["via"]), entry.get("seq"))
                    except (ValueError, KeyError, TypeError):
                        continue
        else:
            for item in self.items():
                seen[message_id(item)] = (str(item.get("via", SSE)), item.get("seq"))
        return dict(list(seen.items())[-MAX_SEEN:])

    def _remember(self, items: list[dict[str, Any]], transport: str) -> None:
        """
        Add C{items} to C{seen.jsonl} (before the cursor moves), keeping
        it to the newest L{MAX_SEEN} entries.
        """
        path = self.home.seen_path
        if not path.exists() and self.home.messages_path.exists():
            earlier = self.seen()  # carry an older home's messages over once
            self._write_seen(earlier)
        lines = "".join(
            json.dumps(
                {"id": message_id(i), "via": transport, "seq": i.get("seq")},
                separators=(",", ":"),
            )
            + "\n"
            for i in items
        ).encode("utf-8")
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, lines)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if size > 2 * MAX_SEEN * 180:  # about twice MAX_SEEN lines: trim
            self._write_seen(self.seen())

    def _write_seen(self, seen: dict[str, tuple[str, Any]]) -> None:
        data = "".join(
            json.dumps({"id": k, "via": via, "seq": seq}, separators=(",", ":")) + "\n"
            for k, (via, seq) in list(seen.items())[-MAX_SEEN:]
        ).encode("utf-8")
        write_atomic(self.home.seen_path, data)
