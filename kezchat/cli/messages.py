"""
Reading received messages: verify, decrypt, and say who sent them.

A relay item is trusted only as far as it verifies: the envelope's
signature must hold for its C{from} key, that key must be the one the
server vouched for (C{from_primary}), the envelope must be addressed to
us, and the sender's handle must be pinned to that key (pinned now, on
first use, if it is new). Whatever fails is reported in
L{ReceivedMessage.warning} with C{verified} false; the message is still
shown, never dropped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.threads import deferToThread

from kezchat.cli.audit import gossip_warning, vouch_sender
from kezchat.cli.context import Context
from kezchat.client.errors import ClientError
from kezchat.e2e import EnvelopeError, PlaintextError, open_envelope, parse_plaintext
from kezchat.identity.keys import KeyPair
from kezchat.timeutil import format_rfc3339

#: plaintext fields never printed (file contents)
HIDDEN_FIELDS = frozenset({"data"})


@dataclass
class ReceivedMessage:
    seq: Any
    sender: str | None
    from_primary: str | None
    ts: str | None
    verified: bool
    plaintext: dict[str, Any] | None
    warning: str | None = None
    item: dict[str, Any] = field(default_factory=dict)

    @property
    def type(self) -> str | None:
        return self.plaintext.get("type") if self.plaintext else None


def output_json(message: ReceivedMessage) -> dict[str, Any]:
    """
    The C{listen --json} line: seq, from, from_primary, ts, verified,
    type and the plaintext's other fields except file data.
    """
    out: dict[str, Any] = {
        "seq": message.seq,
        "from": message.sender,
        "from_primary": message.from_primary,
        "ts": message.ts,
        "verified": message.verified,
        "type": message.type,
    }
    for key, value in (message.plaintext or {}).items():
        if key not in out and key not in HIDDEN_FIELDS:
            out[key] = value
    if message.warning:
        out["warning"] = message.warning
    return out


def _size(n: Any) -> str:
    if not isinstance(n, int):
        return "? bytes"
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def human_line(message: ReceivedMessage) -> str:
    who = message.sender or message.from_primary or "?"
    mark = "" if message.verified else " [UNVERIFIED]"
    p = message.plaintext or {}
    kind = message.type
    if kind == "text":
        body = str(p.get("text", ""))
    elif kind == "file":
        body = f"sent a file: {p.get('name')} ({_size(p.get('size'))})"
    elif kind == "file_chunk":
        body = f"file part {p.get('i')} of {p.get('file_id')}"
    elif kind == "file_share":
        body = (
            f"offers {p.get('name')} ({_size(p.get('size'))}):"
            f" kez-chat fetch {p.get('blake3')} --out PATH"
        )
    elif p:
        body = f"({kind} message)"
    else:
        body = "(could not be read)"
    return f"[{message.seq}] {who}{mark}: {body}"


class Reader:
    """
    Turns stored relay items into L{ReceivedMessage}s for one account.
    """

    def __init__(self, ctx: Context, keypair: KeyPair, account: dict[str, Any]) -> None:
        self.ctx = ctx
        self.keypair = keypair
        self.account = account
        self._handles: dict[str, str | None] = {}
        self._contacts: dict[str, dict[str, Any]] | None = None

    async def refresh(self) -> None:
        """
        Take a snapshot of the pinned contacts (off the reactor thread);
        until the next refresh, L{read} consults it instead of the file.
        """
        self._contacts = await deferToThread(self.ctx.contacts.snapshot)

    def _pinned(self, fqhn: str) -> dict[str, Any] | None:
        if self._contacts is None:
            return self.ctx.contacts.get(fqhn)
        return self._contacts.get(fqhn.lower())

    async def handle_of(self, primary: str) -> str | None:
        """
        The handle bound to C{primary}: from contacts, else the server.
        """
        if primary not in self._handles:
            if self._contacts is None:
                contact = self.ctx.contacts.by_primary(primary)
            else:
                contact = next(
                    (c for c in self._contacts.values() if c["primary"] == primary), None
                )
            if contact is not None:
                self._handles[primary] = contact["fqhn"]
            else:
                try:
                    record = await self.ctx.chat().by_primary(primary)
                except ClientError:
                    return None
                self._handles[primary] = record["fqhn"] if record else None
        return self._handles[primary]

    def _pin_first_use(self, fqhn: str, primary: str) -> None:
        pinned = self.ctx.contacts.pin(
            {
                "handle": fqhn.partition("@")[0],
                "fqhn": fqhn,
                "primary": primary,
                "pinned_at": format_rfc3339(time.time()),
                "source": "message",
            }
        )
        if self._contacts is not None:
            self._contacts[fqhn.lower()] = pinned

    async def read(self, item: dict[str, Any]) -> ReceivedMessage:
        """
        Verify and decrypt one item; pins its sender on first use (only
        once everything about it verified).
        """
        envelope = item.get("envelope")
        from_primary = item.get("from_primary")
        sender = item.get("from") if isinstance(item.get("from"), str) else None
        problems: list[str] = []
        plaintext: dict[str, Any] | None = None
        pinned = self._pinned(sender) if sender else None
        expected = pinned["primary"] if pinned else from_primary
        if isinstance(envelope, dict) and envelope.get("from") != from_primary:
            problems.append("the envelope's sender is not the key the server vouched for")
        if pinned and from_primary != pinned["primary"]:
            problems.append(
                f"key changed: {sender} is pinned to {pinned['primary']}, this came from"
                f" {from_primary}"
            )
        try:
            opened = open_envelope(
                envelope,
                self.keypair,
                expected_sender=expected if isinstance(expected, str) else None,
            )
            plaintext = opened.plaintext
            parse_plaintext(plaintext)
        except EnvelopeError as e:
            problems.append(f"{e} ({e.code})")
        except PlaintextError as e:
            problems.append(f"the plaintext is malformed: {e}")
        if not sender:
            problems.append("the sender has no handle on this server")
        if not problems and pinned is None and sender and isinstance(from_primary, str):
            # nothing is pinned that the key directory does not vouch for
            refused = await vouch_sender(self.ctx, sender, from_primary)
            if refused:
                problems.append(refused)
            else:
                await deferToThread(self._pin_first_use, sender, from_primary)
        ts = envelope.get("ts") if isinstance(envelope, dict) else None
        # the sender's view of the key directory against ours (a warning,
        # not a flaw of this message)
        split = await gossip_warning(self.ctx, plaintext) if not problems else None
        return ReceivedMessage(
            seq=item.get("seq"),
            sender=sender,
            from_primary=from_primary if isinstance(from_primary, str) else None,
            ts=ts if isinstance(ts, str) else None,
            verified=not problems,
            plaintext=plaintext,
            warning="; ".join(dict.fromkeys([*problems, *([split] if split else [])])) or None,
            item=item,
        )


async def find_file_share(ctx: Context, blake3: str) -> ReceivedMessage | None:
    """
    The newest received C{file_share} offer of the file whose BLAKE3 is
    C{blake3}, verified and decrypted (its C{verified} says whether it can
    be trusted), or C{None} if no received message offers it. Reads what
    C{listen} saved in the home.
    """
    keypair = await ctx.keypair()
    reader = Reader(ctx, keypair, ctx.account())
    await reader.refresh()
    found: ReceivedMessage | None = None
    for item in await deferToThread(lambda: list(ctx.received.items())):
        message = await reader.read(item)
        p = message.plaintext or {}
        if p.get("type") == "file_share" and p.get("blake3") == blake3.lower():
            found = message
    return found
