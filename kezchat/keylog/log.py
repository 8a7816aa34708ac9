"""
The key directory as the server answers it: signed heads, inclusion and
consistency proofs, leaves. Knows nothing of HTTP (errors are
L{KezError}s) nor of the database (it sees a
L{kezchat.storage.interfaces.KeyLogStore}).

Every answer is built from stored complete-subtree hashes: a root or a
proof is one read of O(log n) of them, never a rebuild of the tree. The
head is signed once per size and kept until the log grows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kezchat.errors import KezError
from kezchat.keylog.merkle import (
    consistency_ranges,
    from_mapping,
    inclusion_ranges,
    nodes_for,
    proof_hashes,
    tree_root,
)
from kezchat.keylog.wire import MAX_INDEX, Head, b64url, sign_head
from kezchat.registry import Registry
from kezchat.storage.interfaces import KeyLogStore
from kezchat.timeutil import format_rfc3339

#: the most leaves one C{entries} call returns
MAX_ENTRIES = 1000


class KeyLog:
    """
    The key directory's read side.
    """

    def __init__(
        self, store: KeyLogStore, registry: Registry, clock: Callable[[], float]
    ) -> None:
        """
        @param registry: parses the handles that inclusion is asked for.
        @param clock: seconds since the epoch (the heads' C{ts}).
        """
        self.store = store
        self._registry = registry
        self._clock = clock
        self._seed: bytes | None = None
        self._head: Head | None = None

    async def _root(self, size: int) -> bytes:
        wanted = nodes_for([(0, size)]) if size else set()
        nodes = await self.store.nodes(wanted)
        return tree_root(size, from_mapping(nodes))

    async def _path(self, ranges: list[tuple[int, int]]) -> list[str]:
        nodes = await self.store.nodes(nodes_for(ranges))
        return [h.hex() for h in proof_hashes(ranges, from_mapping(nodes))]

    async def signed_head(self) -> Head:
        """
        The head of the log as committed now; signed again only when the
        log has grown since the last one.
        """
        size = await self.store.size()
        head = self._head
        if head is not None and head.size == size:
            return head
        if self._seed is None:
            self._seed = await self.store.signing_seed()
        root = await self._root(size)
        fresh = sign_head(self._seed, size, root, format_rfc3339(self._clock()))
        if self._head is None or self._head.size < size:
            self._head = fresh
        return fresh

    async def head(self) -> dict[str, Any]:
        return (await self.signed_head()).json()

    async def inclusion(self, handle: str, size: int) -> dict[str, Any]:
        """
        The proof that C{handle}'s registration is in the tree of C{size}.

        @raise KezError: C{not_found} for a handle not in the log,
            C{bad_request} for a size that does not hold its leaf or that
            the log has not reached.
        """
        parsed = self._registry.parse_lookup(handle)
        leaf = None
        if parsed.server == self._registry.policy.server:
            leaf = await self.store.leaf_of(parsed.fqhn)
        if leaf is None:
            raise KezError("not_found", f"{parsed.fqhn} is not in the key directory")
        current = await self.store.size()
        if not leaf.index < size <= current:
            raise KezError(
                "bad_request",
                f"size must be above the leaf's index {leaf.index} and at most {current}",
            )
        return {
            "index": leaf.index,
            "size": size,
            "leaf": b64url(leaf.leaf),
            "path": await self._path(inclusion_ranges(leaf.index, size)),
        }

    async def consistency(self, first: int, second: int) -> dict[str, Any]:
        """
        The proof that the tree of C{second} extends the tree of C{first}.

        @raise KezError: C{bad_request} unless C{0 < first <= second <=}
            the log's size.
        """
        current = await self.store.size()
        if not 0 < first <= second <= current:
            raise KezError("bad_request", f"need 0 < from <= to <= {current}")
        return {"path": await self._path(consistency_ranges(first, second))}

    async def entries(self, start: int, count: int) -> dict[str, Any]:
        """
        Leaves C{start} onwards, at most C{count} (1 to L{MAX_ENTRIES});
        fewer at the end of the log.
        """
        if not 1 <= count <= MAX_ENTRIES:
            raise KezError("bad_request", f"count must be 1 to {MAX_ENTRIES}")
        current = await self.store.size()
        if start > current:
            raise KezError("bad_request", f"start is past the end of the log ({current})")
        return {"entries": [b64url(leaf) for leaf in await self.store.entries(start, count)]}


def parse_index(value: str | None, name: str) -> int:
    """
    A size or index from a query string: decimal digits only, at most
    L{MAX_INDEX}.

    @raise KezError: C{bad_request}.
    """
    if value is None:
        raise KezError("bad_request", f"{name} is required")
    if not value.isascii() or not value.isdigit() or len(value) > 16 or int(value) > MAX_INDEX:
        raise KezError("bad_request", f"{name} must be a non-negative integer")
    return int(value)
