"""
Contacts: the keys this client has pinned for other people's handles.

Trust on first use: the first key seen for a handle is kept, and a
different key later for the same handle is refused loudly rather than
quietly replacing the old one (it is what an impersonation looks like).
The file is rewritten atomically under a lock, so a C{listen} pinning a
new sender and an C{add} at the same moment do not lose each other's work.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kezchat.cli.errors import CliError
from kezchat.cli.home import Home, read_json, write_json


class KeyChanged(CliError):
    """
    A known handle now presents a different key.
    """

    def __init__(self, fqhn: str, pinned: str, presented: str) -> None:
        super().__init__(
            f"WARNING, key changed for {fqhn}: pinned {pinned}, now {presented}."
            " This may be an impersonation. Only if you confirmed the new key with"
            f" {fqhn} in person, run `kez-chat add {fqhn} --replace-key`"
        )
        self.fqhn = fqhn
        self.pinned = pinned
        self.presented = presented


class ContactBook:
    """
    The C{contacts.json} of one home: C{{fqhn: contact}}.

    A contact is C{{"handle", "fqhn", "primary", "pinned_at", "source",
    "endpoints", "claims", "chain_head"}}; only the first four are always
    present.
    """

    def __init__(self, home: Home) -> None:
        self.home = home

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.home.ensure()
        fd = os.open(self.home.path(".contacts.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        with os.fdopen(fd, "r+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _all(self) -> dict[str, dict[str, Any]]:
        data = read_json(self.home.contacts_path, {"contacts": {}})
        contacts = data.get("contacts") if isinstance(data, dict) else None
        if not isinstance(contacts, dict):
            raise CliError(f"{self.home.contacts_path} is damaged: restore or remove it")
        return contacts

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """
        Every contact by fqhn, as the file holds them now.
        """
        return dict(self._all())

    def all(self) -> list[dict[str, Any]]:
        return [self._all()[k] for k in sorted(self._all())]

    def get(self, fqhn: str) -> dict[str, Any] | None:
        return self._all().get(fqhn.lower())

    def by_primary(self, primary: str) -> dict[str, Any] | None:
        return next((c for c in self._all().values() if c["primary"] == primary), None)

    def pin(
        self,
        contact: dict[str, Any],
        replace: bool = False,
    ) -> dict[str, Any]:
        """
        Pin C{contact} (which has at least C{fqhn} and C{primary}).

        An existing pin with the same key is updated (endpoints, claims);
        with another key it is refused unless C{replace}.

        @raise KeyChanged: the handle is pinned to a different key.
        """
        fqhn = contact["fqhn"].lower()
        with self._locked():
            contacts = self._all()
            old = contacts.get(fqhn)
            if old is not None and old["primary"] != contact["primary"] and not replace:
                raise KeyChanged(fqhn, old["primary"], contact["primary"])
            if old is not None and old["primary"] == contact["primary"]:
                new = {**old, **contact, "pinned_at": old["pinned_at"]}
            else:
                new = dict(contact)
            contacts[fqhn] = new
            write_json(self.home.contacts_path, {"contacts": contacts})
        return new

    def check(self, fqhn: str, primary: str) -> None:
        """
        @raise KeyChanged: C{fqhn} is pinned to another key.
        """
        old = self.get(fqhn)
        if old is not None and old["primary"] != primary:
            raise KeyChanged(fqhn, old["primary"], primary)
