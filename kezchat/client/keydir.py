"""
The client side of the key directory: never take the server's word for a
key.

Before a client pins a key or encrypts to it, L{KeyDirectory.vouch}
checks, against the server's transparency log:

 1. the head's signature, under the log key the client kept from before
    (a log key that changes is refused: it would let the server start a
    new, different history);
 2. that the head extends the newest head the client kept: the same root
    for the same size, a valid consistency proof for a larger one (a
    smaller one is just older; the kept head stays);
 3. that the looked-up key's registration is included under the head, at
    the record's C{log_index}, and that the leaf is a registration of
    exactly that handle with exactly that key, signed by that key.

The newest verified head is kept (L{HeadStore}) and is what the client
gossips in its messages (C{head}); L{KeyDirectory.compare_gossip} checks a
peer's against it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

from kezchat.keylog import merkle
from kezchat.keylog.merkle import ProofError
from kezchat.keylog.wire import (
    Head,
    WireError,
    from_b64url,
    parse_brief,
    parse_head,
    parse_leaf,
    path_from_json,
)


class DirectoryError(Exception):
    """
    The key directory does not vouch for what the server said.

    @ivar code: C{bad_head}, C{log_key_changed}, C{inconsistent},
        C{not_included}, C{wrong_leaf}, C{split_view}.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class LogSource(Protocol):
    """
    The server's log endpoints, as JSON: L{kezchat.client.http.ChatClient}
    on a reactor, or L{kezchat.client.blocking.BlockingChatClient} (whose
    coroutines never suspend) for a command run without one. The checks
    below are the same whichever answers.
    """

    async def log_head(self) -> Any: ...

    async def log_inclusion(self, handle: str, size: int) -> Any: ...

    async def log_consistency(self, first: int, second: int) -> Any: ...


class AttachedProof:
    """
    The log of another domain, as the home server passes it on (SPEC
    §11.5): the head and inclusion proof attached to a remote record
    (C{"directory": {"head", "inclusion"}}), and consistency proofs asked
    of the home server with C{server=<domain>}. The head carries that
    domain's own log key, which the client keeps (under the domain) and
    holds every later head to, exactly as for its own server.
    """

    def __init__(self, domain: str, directory: Any, home: Any) -> None:
        """
        @param home: the home server's client (its C{log_consistency}
            takes C{server=}).
        """
        if not isinstance(directory, dict):
            directory = {}
        self._domain = domain
        self._head = directory.get("head")
        self._inclusion = directory.get("inclusion")
        self._home = home

    async def log_head(self) -> Any:
        return self._head

    async def log_inclusion(self, handle: str, size: int) -> Any:
        return self._inclusion

    async def log_consistency(self, first: int, second: int) -> Any:
        return await self._home.log_consistency(first, second, server=self._domain)


class HeadStore(Protocol):
    """
    Where a client keeps the newest head it verified, per server.
    """

    def get(self, server: str) -> dict[str, Any] | None: ...

    def put(self, server: str, head: dict[str, Any]) -> None: ...


class JsonHeadStore:
    """
    Heads kept in one JSON file (C{{server: head}}), replaced atomically.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def _all(self) -> dict[str, Any]:
        try:
            value = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        return value if isinstance(value, dict) else {}

    def get(self, server: str) -> dict[str, Any] | None:
        head = self._all().get(server)
        return head if isinstance(head, dict) else None

    def put(self, server: str, head: dict[str, Any]) -> None:
        heads = self._all()
        heads[server] = head
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".keydir-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(heads, f, indent=2, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


def _proof(value: Any, what: str) -> list[bytes]:
    try:
        if not isinstance(value, dict):
            raise WireError(f"the {what} is not an object")
        return path_from_json(value.get("path"))
    except WireError as e:
        raise DirectoryError("bad_head", f"the server's {what} is malformed: {e}") from None


class KeyDirectory:
    """
    One server's key directory, as a client checks it.
    """

    def __init__(self, server: str, source: LogSource, store: HeadStore) -> None:
        """
        @param server: the server's domain (the key the heads are kept under).
        """
        self.server = server
        self._source = source
        self._store = store

    def kept(self) -> Head | None:
        """
        The newest head verified so far, or C{None}.
        """
        value = self._store.get(self.server)
        if value is None:
            return None
        try:
            return parse_head(value)
        except WireError:
            return None

    async def current_head(self) -> Head:
        """
        The server's head, checked (signature, log key, consistency with
        the kept head) and kept if newer.

        @raise DirectoryError: any check fails.
        """
        try:
            head = parse_head(await self._source.log_head())
        except WireError as e:
            raise DirectoryError("bad_head", f"the server's log head is refused: {e}") from None
        kept = self.kept()
        if kept is not None:
            await self._check_against(kept, head)
        if kept is None or head.size > kept.size:
            self._store.put(self.server, head.json())
        return head

    async def _check_against(self, kept: Head, head: Head) -> None:
        if head.key != kept.key:
            raise DirectoryError(
                "log_key_changed",
                f"the server's log key changed from {kept.key} to {head.key}: it could be"
                " showing a different key directory",
            )
        older, newer = (kept, head) if kept.size <= head.size else (head, kept)
        if older.size == newer.size:
            if older.root != newer.root:
                raise DirectoryError(
                    "split_view",
                    f"two different key directories of size {older.size}: the server is"
                    " showing different people different key directories",
                )
            return
        if older.size == 0:
            return
        proof = _proof(
            await self._source.log_consistency(older.size, newer.size), "consistency proof"
        )
        try:
            merkle.verify_consistency(older.size, newer.size, proof, older.root, newer.root)
        except ProofError as e:
            raise DirectoryError(
                "inconsistent",
                f"the key directory of size {newer.size} does not extend the one of size"
                f" {older.size} ({e}): the server rewrote its history",
            ) from None

    async def vouch(self, record: dict[str, Any]) -> Head:
        """
        Check that the log vouches for C{record} (a C{/v1/u} or
        C{/v1/by-primary} answer): its handle and key are registered in the
        log under a verified head. Returns that head.

        @raise DirectoryError: it does not.
        """
        fqhn, primary, index = record.get("fqhn"), record.get("primary"), record.get("log_index")
        if not isinstance(index, int) or isinstance(index, bool):
            raise DirectoryError(
                "not_included", f"the server gives no key directory entry for {fqhn}"
            )
        head = await self.current_head()
        if not index < head.size:
            raise DirectoryError(
                "not_included", f"{fqhn}'s entry {index} is not under the head ({head.size})"
            )
        answer = await self._source.log_inclusion(str(fqhn), head.size)
        path = _proof(answer, "inclusion proof")
        try:
            leaf = from_b64url(answer.get("leaf"))
            registration = parse_leaf(leaf)
        except WireError as e:
            raise DirectoryError("wrong_leaf", f"{fqhn}'s log entry is refused: {e}") from None
        if answer.get("index") != index or answer.get("size") != head.size:
            raise DirectoryError(
                "not_included", f"the inclusion proof for {fqhn} is for another place"
            )
        if registration.fqhn != fqhn or registration.primary != primary:
            raise DirectoryError(
                "wrong_leaf",
                f"the key directory registers {registration.fqhn} with {registration.primary},"
                f" not {fqhn} with {primary}: the server substituted a key",
            )
        try:
            merkle.verify_inclusion(index, head.size, merkle.leaf_hash(leaf), path, head.root)
        except ProofError as e:
            raise DirectoryError(
                "not_included", f"{fqhn}'s key is not in the key directory ({e})"
            ) from None
        return head

    async def compare_gossip(self, value: object, catch_up: bool = True) -> None:
        """
        Check a head a peer put in a message (C{{"size", "root"}}) against
        ours: the same size must have the same root, and whichever is
        larger must extend the other (asked of our server, checked here).

        @param catch_up: fetch the current head first when the peer's is
            larger (not for another domain's log, whose head comes only
            attached to a lookup: the consistency proof alone is checked).
        @raise DirectoryError: C{split_view} when they disagree.
        """
        try:
            size, root = parse_brief(value)
        except WireError:
            return
        ours = self.kept()
        if ours is None:
            return
        if size > ours.size and catch_up:
            # a peer ahead of us: catch up first (checked against ours)
            ours = await self.current_head()
        if size == ours.size:
            if root != ours.root:
                raise _split(size)
            return
        if min(size, ours.size) == 0:
            return
        if size < ours.size:
            first, first_root, second, second_root = size, root, ours.size, ours.root
        else:
            first, first_root, second, second_root = ours.size, ours.root, size, root
        try:
            answer = await self._source.log_consistency(first, second)
        except Exception:
            if size > ours.size:
                # our server does not show us the peer's size yet: nothing
                # to compare until it does
                return
            raise
        proof = _proof(answer, "consistency proof")
        try:
            merkle.verify_consistency(first, second, proof, first_root, second_root)
        except ProofError:
            raise _split(size) from None


def _split(size: int) -> DirectoryError:
    return DirectoryError(
        "split_view",
        f"a peer saw a key directory of size {size} that does not match ours: the server is"
        " showing people different key directories",
    )
