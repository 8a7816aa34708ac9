"""
A keyring backend for tests: stands in for the OS keyring (Secret Service,
Keychain, ...), which this machine has none of, so the CLI's keyring path
runs for real through the C{keyring} package. Selected with keyring's own
C{PYTHON_KEYRING_BACKEND=tests.keyringbackend.FileKeyring}; it keeps its
entries in the JSON file named by C{KEZ_TEST_KEYRING_FILE}, outside the
CLI's home.
"""

from __future__ import annotations

import json
import os

from keyring.backend import KeyringBackend
from keyring.errors import PasswordDeleteError


class FileKeyring(KeyringBackend):
    priority = 1  # type: ignore[assignment]

    def _load(self) -> dict[str, str]:
        try:
            with open(os.environ["KEZ_TEST_KEYRING_FILE"]) as f:
                return json.load(f)
        except FileNotFoundError:
            return {}

    def _save(self, entries: dict[str, str]) -> None:
        with open(os.environ["KEZ_TEST_KEYRING_FILE"], "w") as f:
            json.dump(entries, f)

    def get_password(self, service: str, username: str) -> str | None:
        return self._load().get(f"{service}\0{username}")

    def set_password(self, service: str, username: str, password: str) -> None:
        entries = self._load()
        entries[f"{service}\0{username}"] = password
        self._save(entries)

    def delete_password(self, service: str, username: str) -> None:
        entries = self._load()
        if entries.pop(f"{service}\0{username}", None) is None:
            raise PasswordDeleteError(username)
        self._save(entries)
