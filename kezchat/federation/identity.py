"""
This server's own key: what it signs its requests to other servers with,
published at C{GET /v1/server}. Created with the database and kept in its
settings, so it survives restarts and travels with backups.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred

from kezchat.identity.keys import KeyPair


class ServerIdentity:
    def __init__(self, domain: str, seed: Callable[[], Deferred[bytes]]) -> None:
        """
        @param seed: reads the key's seed from the database (once).
        """
        self.domain = domain
        self._seed = seed
        self._key: KeyPair | None = None

    async def key(self) -> KeyPair:
        if self._key is None:
            self._key = KeyPair(await self._seed())
        return self._key

    async def json(self) -> dict[str, Any]:
        """
        The C{GET /v1/server} answer.
        """
        return {"server": self.domain, "key": (await self.key()).primary}
