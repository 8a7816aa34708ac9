"""
The storage interfaces, independent of any database.

Every backend (SQLite here; others implement the same protocols) must keep
the guarantees stated on each method: the domain objects rely on them and
on nothing else. Every method returns a L{Deferred} and never blocks the
reactor; a database that cannot answer fails it with
L{kezchat.storage.errors.DatabaseUnavailable}, and a write the database
refuses for what it carries with L{kezchat.storage.errors.Rejected}: never
with a driver's own exception.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from twisted.internet.defer import Deferred

# where it was defined first; storage errors live in kezchat.storage.errors
from kezchat.storage.errors import IdempotencyConflict as IdempotencyConflict


@dataclass(frozen=True)
class HandleRecord:
    """
    One registered handle. C{registered_at} is seconds since the epoch;
    C{log_index} is its registration's leaf in the key directory (C{None}
    for a handle stored without one, registered before the log existed).
    """

    local: str
    server: str
    primary: str
    registered_at: float
    log_index: int | None = None

    @property
    def fqhn(self) -> str:
        return f"{self.local}@{self.server}"


class HandleTaken(Exception):
    """
    The handle is already registered.
    """


class PrimaryTaken(Exception):
    """
    The primary key is already bound to another handle.
    """


class RegistryStore(Protocol):
    """
    The handle registry's table. Uniqueness of handle and of primary is the
    store's job: it must hold under concurrent calls, from any number of
    server processes sharing the database.
    """

    def add_handle(self, record: HandleRecord, leaf: bytes | None = None) -> Deferred[HandleRecord]:
        """
        Store C{record}; fail with L{HandleTaken} or L{PrimaryTaken}. With
        C{leaf}, append it to the key directory in the same transaction
        (see L{KeyLogStore}) and return the record with its C{log_index}:
        a handle is registered if and only if its leaf is in the log.
        """

    def handle(self, fqhn: str) -> Deferred[HandleRecord | None]:
        """
        The record of C{fqhn} (lowercase, as registered), or C{None}. A
        record once returned never changes: handles are never unbound or
        rebound, which is what lets the registry cache it.
        """

    def by_primary(self, primary: str) -> Deferred[HandleRecord | None]:
        """
        The record bound to C{primary} (C{ed25519:<hex>}), or C{None}; as
        stable as L{handle}.
        """


@dataclass(frozen=True)
class StoredMessage:
    """
    One message as the relay keeps it. C{envelope} is the client's JSON
    object serialised once, compactly; the server never looks inside.
    """

    recipient: str
    seq: int
    sender: str
    sender_primary: str
    envelope: str
    created_at: float
    #: C{"in"}: a message C{recipient} received; C{"out"}: the sender's
    #: copy of a message C{recipient} (the sender) sent to C{to}
    direction: str = "in"
    #: an C{out} item's recipient and their key (C{None} on C{in} items)
    to: str | None = None
    to_primary: str | None = None
    #: an C{out} item of a message another server never took (given up
    #: after the retention period; see L{kezchat.federation.outbound})
    undeliverable: bool = False
    #: the key of C{recipient} (the inbox's owner), when the message was
    #: just stored by someone who knew it (the relay looked the recipient
    #: up to accept it): the NATS broker names the recipient's subject
    #: with it rather than asking the registry again. C{None} on items read
    #: back from storage; not part of a message's identity.
    recipient_primary: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class NewMessage:
    recipient: str
    sender: str
    sender_primary: str
    envelope: str
    created_at: float
    idempotency_key: str | None = None
    #: identifies the request an idempotency key is used for (recipient and
    #: envelope); a second use of the key must carry the same
    request_hash: str | None = None
    #: the recipient's key: when given, the sender's copy is stored too
    #: (see L{MessageStore.add_message}); a message to oneself has one copy
    recipient_primary: str | None = None

    @property
    def keeps_senders_copy(self) -> bool:
        """
        Whether storing this message also adds the sender's copy to the
        sender's own inbox: asked for, and not a message to oneself (which
        is in the sender's inbox already, once).
        """
        return self.recipient_primary is not None and self.recipient != self.sender

    def senders_copy(self, seq: int) -> StoredMessage:
        """
        The sender's copy of this message, numbered C{seq} in the sender's
        own inbox.
        """
        return StoredMessage(
            self.sender, seq, self.sender, self.sender_primary, self.envelope,
            self.created_at, "out", self.recipient, self.recipient_primary,
            recipient_primary=self.sender_primary,
        )


@dataclass(frozen=True)
class Accepted:
    """
    The outcome of storing a message: C{duplicate} when the idempotency key
    had been used, in which case C{message} is the first one's seq only.
    """

    seq: int
    created_at: float
    duplicate: bool
    message: StoredMessage | None
    #: the sender's copy stored with it (see L{NewMessage.keeps_senders_copy})
    senders_copy: StoredMessage | None = None

    def stored(self) -> list[StoredMessage]:
        """
        What was stored, the recipient's copy first: what is announced.
        """
        return [m for m in (self.message, self.senders_copy) if m is not None]


@dataclass(frozen=True)
class Page:
    """
    Messages read in seq order, bounded by count and by bytes.

    @ivar more: the page stopped at its count or byte bound, so messages
        may follow the last one; C{False} means the inbox ended.
    """

    messages: list[StoredMessage]
    more: bool


@dataclass(frozen=True)
class RetentionReport:
    expired: int = 0
    expired_bytes: int = 0
    over_quota: int = 0
    over_quota_bytes: int = 0


class MessageStore(Protocol):
    """
    The relay's tables.
    """

    def add_messages(self, messages: list[NewMessage]) -> Deferred[list[Accepted]]:
        """
        Store messages durably (one commit), numbering each in its
        recipient's sequence; the Deferred fires after the commit.
        """

    def add_message(self, message: NewMessage) -> Deferred[Accepted]:
        """
        Store one message durably; the Deferred fires only after the
        commit, so what it reports survives a crash.

        Seqs are per recipient, start at 1 and are consecutive in commit
        order, whatever number of processes share the store.

        When C{message.keeps_senders_copy}, the sender's copy
        (L{NewMessage.senders_copy}: direction C{out}, numbered in the
        sender's own inbox) is stored in the same transaction: both copies
        or neither, never one alone. A duplicate stores neither again. A key the
        same sender used before answers the first message's seq with
        C{duplicate} set and stores nothing; it fails with
        L{IdempotencyConflict} when both carry a C{request_hash} and the
        hashes differ.
        """

    def messages_page(
        self, recipient: str, since: int, limit: int, max_bytes: int
    ) -> Deferred[Page]:
        """
        The messages after C{since} (I{exclusive}: C{since=0} is the whole
        inbox, C{since=n} starts at seq C{n+1}) in seq order: at most C{limit}, whose
        envelopes add up to at most C{max_bytes} — except that the first
        always comes, however large, so paging always moves on. An
        implementation must not load the rest of the inbox to decide
        (all of it at once is what bounding pages in bytes prevents).
        """

    def last_seqs(self, recipients: list[str]) -> Deferred[dict[str, int]]:
        """
        The latest seq given out in each inbox, deleted or not (inboxes
        that never had one are left out): where a live-only stream starts,
        and how streams notice a message whose announcement was lost.
        """

    def delete_upto(self, recipient: str, upto: int) -> Deferred[int]:
        """
        Delete C{recipient}'s messages with seq I{up to and including}
        C{upto}; how many were deleted. Seqs are never reused afterwards.
        """

    def apply_retention(
        self,
        older_than: float,
        max_bytes_per_recipient: int,
        replay_keys_before: float | None = None,
    ) -> Deferred[RetentionReport]:
        """
        Delete every message (and idempotency key) created strictly before
        C{older_than} (seconds since the epoch), then, per recipient, the
        oldest messages until their envelopes add up to at most
        C{max_bytes_per_recipient}; report what went, by reason.

        Keys longer than a client may choose (64 characters) are the
        server's own, derived from a request's signature and needed only
        while it could be replayed: those created before
        C{replay_keys_before} go too.

        The work is done in bounded chunks, each a short write of its own,
        so other writes are never held up for long; a sweep may stop early
        when another process is sweeping.
        """


@dataclass(frozen=True)
class StoredManifest:
    """
    A shared-files manifest blob as the mirror keeps it: the exact bytes
    the owner uploaded, and their BLAKE3.
    """

    primary: str
    blob: bytes
    blake3: str
    stored_at: float


class ManifestStore(Protocol):
    """
    The manifest mirror's table: the latest blob per primary.
    """

    def put_manifest(self, manifest: StoredManifest) -> Deferred[StoredManifest]:
        """
        Store C{manifest}, replacing the primary's previous one.
        """

    def manifest(self, primary: str) -> Deferred[StoredManifest | None]:
        """
        The latest manifest of C{primary}, byte for byte as stored, or
        C{None}.
        """


@dataclass(frozen=True)
class LogLeaf:
    """
    One leaf of the key directory: the registration's bytes as accepted.
    """

    index: int
    fqhn: str
    leaf: bytes


class KeyLogStore(Protocol):
    """
    The key directory's tables: leaves, appended only by
    L{RegistryStore.add_handle} (one log, dense indexes, whatever number
    of processes register at once), and the hashes of complete subtrees
    (L{kezchat.keylog.merkle}), which never change once written.
    """

    def size(self) -> Deferred[int]:
        """
        How many leaves are committed.
        """

    def nodes(self, wanted: set[tuple[int, int]]) -> Deferred[dict[tuple[int, int], bytes]]:
        """
        The stored hashes of the perfect subtrees C{(level, index)} in
        C{wanted}, all in one read; a node not (yet) complete is missing
        from the answer.
        """

    def leaf_of(self, fqhn: str) -> Deferred[LogLeaf | None]:
        """
        The leaf that registered C{fqhn}, or C{None}.
        """

    def entries(self, start: int, count: int) -> Deferred[list[bytes]]:
        """
        The leaves from index C{start}, at most C{count}, in index order.
        """

    def signing_seed(self) -> Deferred[bytes]:
        """
        The log key's 32-byte Ed25519 seed, created with the database.
        """

    def server_seed(self) -> Deferred[bytes]:
        """
        The server key's 32-byte Ed25519 seed, created with the database:
        what this server signs its requests to other servers with.
        """
