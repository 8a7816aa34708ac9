"""
Reading received messages: verify, decrypt, and say who sent them.

The server is the adversary the envelope exists for, so nothing in a relay
item is taken on its word. A message is shown as normal only when:

  - its envelope verifies (signature by the envelope's C{from} key,
    addressed to us, decrypts, a well-formed plaintext with no repeated
    key) — checked first, before anything else is believed;
  - the server's C{from_primary} is that same key;
  - the server's C{from} is a handle (the whole string, canonical form);
  - the pins agree both ways: the key is pinned to that handle (or to
    none) and the handle to that key (or to none). A sender seen for the
    first time is resolved like C{add} does (registry, key directory and
    sigchain) and pinned only when the registry names the very key that
    signed and the key directory vouches for that key under that handle.

A plaintext's C{head} (the sender's newest verified key-directory head)
is compared with the directory we see: a split view is a loud warning.

The handle a message is labelled with always comes from the pin, never
from the item. Whatever fails is reported in L{ReceivedMessage.warning}
with C{verified} false; the message is still shown, never dropped, and
nothing is pinned on its strength.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.threads import deferToThread

from kezchat.cli.audit import gossip_warning
from kezchat.cli.context import Context
from kezchat.cli.errors import CliError
from kezchat.cli.home import Account
from kezchat.cli.output import visible
from kezchat.client.errors import ClientError
from kezchat.e2e import EnvelopeError, PlaintextError, open_envelope, parse_plaintext
from kezchat.identity.handles import InvalidHandle, parse_handle
from kezchat.identity.keys import KeyPair
from kezchat.timeutil import parse_rfc3339

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
    #: what the server claimed as the sender (shown only when it differs)
    claimed_from: str | None = None
    #: when the server stored it
    created_at: str | None = None
    #: a sent copy's recipient, as pinned here
    to: str | None = None
    #: what the server claimed as a sent copy's recipient
    claimed_to: str | None = None

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
    if message.created_at is not None:
        out["created_at"] = message.created_at
    if message.claimed_from is not None and message.claimed_from != message.sender:
        out["claimed_from"] = message.claimed_from
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
    """
    One line for a person: every piece of network text made visible
    (L{visible}), so a message cannot forge another line, move the
    cursor or reorder what follows.
    """
    who = visible(message.sender or message.from_primary or "?")
    mark = "" if message.verified else " [UNVERIFIED]"
    if message.claimed_from is not None and message.claimed_from != message.sender:
        mark += f" (the server says {visible(message.claimed_from)})"
    p = message.plaintext or {}
    kind = visible(message.type)
    if kind == "text":
        body = visible(p.get("text", ""))
    elif kind == "file":
        body = f"sent a file: {visible(p.get('name'))} ({_size(p.get('size'))})"
    elif kind == "file_chunk":
        body = f"file part {visible(p.get('i'))} of {visible(p.get('file_id'))}"
    elif kind == "file_share":
        body = (
            f"offers {visible(p.get('name'))} ({_size(p.get('size'))}):"
            f" kez-chat fetch {visible(p.get('blake3'))} --out PATH"
        )
    elif p:
        body = f"({kind} message)"
    else:
        body = "(could not be read)"
    return f"[{visible(message.seq)}] {who}{mark}: {body}"


def opened_or_problem(
    open_: Callable[[Any, KeyPair], Any],
    envelope: Any,
    keypair: KeyPair,
    problems: list[str],
    what: str = "plaintext",
) -> Any:
    """
    Step 1 of the trust rule for any item: the envelope on its own,
    opened with C{open_} and its plaintext checked. The opened envelope,
    or C{None} with the reason added to C{problems}.
    """
    try:
        opened = open_(envelope, keypair)
        parse_plaintext(opened.plaintext)
    except EnvelopeError as e:
        problems.append(f"{e} ({e.code})")
    except PlaintextError as e:
        problems.append(f"the {what} is malformed: {e}")
    else:
        return opened
    return None


def claimed_handle(claimed: object, role: str, problems: list[str]) -> str | None:
    """
    The server's C{from} (or C{to}) as a canonical handle, or C{None} with
    the reason added to C{problems}: it must be a handle, whole.
    """
    handle = canonical_handle(claimed)
    if claimed is None:
        problems.append(f"the {role} has no handle on this server")
    elif handle is None:
        problems.append(f"the server labels the {role} {claimed!r}, which is not a handle")
    return handle


def canonical_handle(value: object) -> str | None:
    """
    C{value} if it is a qualified handle in its canonical form (the whole
    string: no spaces, no invisible characters, lowercase), else C{None}.
    """
    if not isinstance(value, str) or "@" not in value:
        return None
    try:
        handle = parse_handle(value, "")
    except InvalidHandle:
        return None
    return value if handle.fqhn == value else None


def clamped_ts(ts: object, created_at: object) -> str | None:
    """
    The sender's C{ts}, but never later than when the server stored the
    message (a sender cannot pin its message to the end of the list by
    claiming the year 9999); the server's time when C{ts} is unreadable.
    """
    stored = created_at if isinstance(created_at, str) else None
    try:
        sent = parse_rfc3339(ts)
    except (ValueError, TypeError):
        return stored
    try:
        at = parse_rfc3339(stored) if stored is not None else None
    except (ValueError, TypeError):
        at = None
    if at is not None and sent > at:
        return stored
    return ts if isinstance(ts, str) else stored


class Reader:
    """
    Turns stored relay items into L{ReceivedMessage}s for one account.
    """

    def __init__(self, ctx: Context, keypair: KeyPair, account: Account) -> None:
        self.ctx = ctx
        self.keypair = keypair
        self.account = account
        self._handles: dict[str, str | None] = {}
        #: why a (handle, key) could not be pinned, so it is asked once
        self._refused: dict[tuple[str, str], str] = {}
        self._contacts: dict[str, dict[str, Any]] | None = None

    async def refresh(self) -> None:
        """
        Take a snapshot of the pinned contacts (off the reactor thread);
        until the next refresh, L{read} consults it instead of the file.
        """
        self._contacts = await deferToThread(self.ctx.contacts.snapshot)

    def pinned(self, fqhn: str) -> dict[str, Any] | None:
        """
        The contact pinned for the handle C{fqhn}, if any.
        """
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

    def pinned_key(self, primary: str) -> dict[str, Any] | None:
        """
        The contact the key C{primary} is pinned to, if any.
        """
        if self._contacts is None:
            return self.ctx.contacts.by_primary(primary)
        return next((c for c in self._contacts.values() if c["primary"] == primary), None)

    async def first_use(self, fqhn: str, primary: str) -> tuple[str | None, str | None]:
        """
        Pin C{fqhn} to C{primary} if the registry names that key for it,
        the key directory vouches for it under that handle (inclusion in a
        signed head consistent with the one we kept) and its sigchain
        holds: (the pinned handle, None) or (None, why not).
        """
        cached = self._refused.get((fqhn, primary))
        if cached is not None:
            return None, cached
        from kezchat.cli.contacts import resolve_contact

        try:
            contact = await resolve_contact(self.ctx, fqhn, quiet=True)
            if contact["primary"] != primary:
                raise CliError(
                    f"the registry names {contact['primary']} for {fqhn}, not the key that"
                    " signed"
                )
        except CliError as e:
            why = f"cannot confirm the sender {fqhn}: {e.message}"
            self._refused[(fqhn, primary)] = why
            return None, why
        contact["source"] = "message"
        try:
            pinned = await deferToThread(self.ctx.contacts.pin, contact)
        except CliError as e:  # pinned meanwhile by another command, to another key
            return None, e.message
        if self._contacts is not None:
            self._contacts[pinned["fqhn"].lower()] = pinned
        return pinned["fqhn"], None

    async def label(
        self, handle: str | None, key: str | None, party: str | None, problems: list[str],
        *, sent: bool = False,
    ) -> str | None:
        """
        The trust rule's pin step, for a message's sender or (C{sent}) a
        sent copy's recipient: the pins checked both ways (C{handle} →
        key and C{key} → handle, each mismatch added to C{problems}); the
        label shown is the handle pinned for the key, never the server's
        word; and when nothing is pinned and nothing else is wrong,
        C{party} (the key the envelope proves) is pinned on first use.
        """
        by_key = self.pinned_key(key) if key else None
        by_handle = self.pinned(handle) if handle else None
        if by_handle is not None and key and by_handle["primary"] != key:
            way = "was sent to" if sent else "came from"
            problems.append(
                f"key changed: {handle} is pinned to {by_handle['primary']}, this {way} {key}"
            )
        if by_key is not None and handle is not None and by_key["fqhn"] != handle:
            what = f"this went to {handle}" if sent else f"{handle} sent this"
            problems.append(f"the server says {what}, but its key is pinned to {by_key['fqhn']}")
        label = by_key["fqhn"] if by_key is not None else None
        if not problems and label is None and handle and party:
            label, why = await self.first_use(handle, party)
            if why is not None:
                problems.append(why)
        return label

    async def read(self, item: dict[str, Any]) -> ReceivedMessage:
        """
        Verify and decrypt one item; pins its sender on first use (only
        once everything about it verified).
        """
        envelope = item.get("envelope")
        from_primary = item.get("from_primary")
        from_primary = from_primary if isinstance(from_primary, str) else None
        claimed = item.get("from")
        problems: list[str] = []
        plaintext: dict[str, Any] | None = None
        # 1. the envelope, on its own: who signed it, and what it says
        opened = opened_or_problem(open_envelope, envelope, self.keypair, problems)
        signer: str | None = opened.sender if opened is not None else None
        plaintext = opened.plaintext if opened is not None else None
        # 2. the server's word, checked against it
        if isinstance(envelope, dict) and envelope.get("from") != from_primary:
            problems.append("the envelope's sender is not the key the server vouched for")
        handle = claimed_handle(claimed, "sender", problems)
        # 3. the pins, both ways; 4. someone new, and everything else
        # holds: pin on first use
        key = signer or (envelope.get("from") if isinstance(envelope, dict) else None)
        label = await self.label(handle, key if isinstance(key, str) else None, signer, problems)
        ts = envelope.get("ts") if isinstance(envelope, dict) else None
        created_at = item.get("created_at")
        # 5. the sender's view of the key directory against ours (a
        # warning, not a flaw of this message)
        split = await gossip_warning(self.ctx, plaintext, label) if not problems else None
        return ReceivedMessage(
            seq=item.get("seq"),
            sender=label,
            from_primary=key if isinstance(key, str) else from_primary,
            ts=clamped_ts(ts, created_at),
            verified=not problems,
            plaintext=plaintext,
            warning="; ".join(dict.fromkeys([*problems, *([split] if split else [])])) or None,
            item=item,
            claimed_from=claimed if isinstance(claimed, str) else None,
            created_at=created_at if isinstance(created_at, str) else None,
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
        if item.get("direction") == "out":
            continue  # one's own sent copies offer nothing to fetch
        message = await reader.read(item)
        p = message.plaintext or {}
        if p.get("type") == "file_share" and p.get("blake3") == blake3.lower():
            found = message
    return found
