"""
The storage interfaces, independent of any database.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import Deferred


@dataclass(frozen=True)
class HandleRecord:
    """
    One registered handle. C{registered_at} is seconds since the epoch.
    """

    local: str
    server: str
    primary: str
    registered_at: float

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

    def add_handle(self, record: HandleRecord) -> Deferred[HandleRecord]:
        """
        Store C{record}; fail with L{HandleTaken} or L{PrimaryTaken}.
        """

    def handle(self, fqhn: str) -> Deferred[HandleRecord | None]: ...

    def by_primary(self, primary: str) -> Deferred[HandleRecord | None]: ...
