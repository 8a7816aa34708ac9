"""
A keyring backend for tests: stands in for the OS keyring (Secret Service,
Keychain, ...), which this machine has none of, so the CLI's keyring path
runs for real through the C{keyring} package. Selected with keyring's own
C{PYTHON_KEYRING_BACKEND=tests.keyringbackend.FileKeyring}; it keeps its
entries in the JSON file named by C{KEZ_TEST_KEYRING_FILE}, outside the
CLI's home.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator

from keyring.backend import KeyringBackend
from keyring.errors import PasswordDeleteError


class FileKeyring(KeyringBackend):
    """
    Several CLI processes share one file (users registered concurrently):
    each change is a read-modify-write under an exclusive lock on a
    sibling lock file, and the file is replaced atomically, as an OS
    keyring never loses one entry to another's write.
    """

    priority = 1  # type: ignore[assignment]

    @property
    def _path(self) -> str:
        return os.environ["KEZ_TEST_KEYRING_FILE"]

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self._path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _load(self) -> dict[str, str]:
        try:
            with open(self._path) as f:
                return json.load(f)
        except FileNotFoundError:
            return {}

    def _save(self, entries: dict[str, str]) -> None:
        tmp = f"{self._path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(entries, f)
        os.replace(tmp, self._path)

    def get_password(self, service: str, username: str) -> str | None:
        return self._load().get(f"{service}\0{username}")

    def set_password(self, service: str, username: str, password: str) -> None:
        with self._locked():
            entries = self._load()
            entries[f"{service}\0{username}"] = password
            self._save(entries)

    def delete_password(self, service: str, username: str) -> None:
        with self._locked():
            entries = self._load()
            if entries.pop(f"{service}\0{username}", None) is None:
                raise PasswordDeleteError(username)
            self._save(entries)
