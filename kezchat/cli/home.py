"""
The home directory: where one client's state lives, and how it is written.

Every file is written atomically (a temporary file in the same directory,
fsync, rename, fsync of the directory), so a crash leaves either the old
or the new content, never half of it. The directory is private (0700)
and the files 0600.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, TypedDict

from kezchat.cli.errors import CliError

APP_NAME = "kez-chat"


class Account(TypedDict):
    """
    The account a home holds (C{account.json}), as L{Home.account} reads
    it: one type for what every command takes from it.
    """

    #: the handle's local part, and the handle whole (C{alice@kez.lat})
    handle: str
    fqhn: str
    #: the account's key, C{"ed25519:<hex>"}
    primary: str
    #: the chat-server it is registered on
    server_url: str
    #: where its sigchain is kept (C{None}: the server named none)
    sigchain_url: str | None
    #: where the key is kept: C{"file"} or C{"keyring"}
    secret: str


def sigchain_of(account: Account) -> str:
    """
    The account's sigchain URL.

    @raise CliError: its server named no sig-server.
    """
    url = account["sigchain_url"]
    if url is None:
        raise CliError(f"{account['fqhn']}'s server names no sig-server: it keeps no sigchain")
    return url


def default_home() -> Path:
    """
    The platform's per-user data directory for kez-chat.
    """
    if sys.platform == "win32":
        base = os.environ.get("APPDATA") or str(Path.home() / "AppData" / "Roaming")
        return Path(base) / APP_NAME
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / APP_NAME
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / APP_NAME


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """
    Replace C{path} with C{data}, durably and all at once.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    if sys.platform == "win32":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: Path, value: Any) -> None:
    write_atomic(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def read_json(path: Path, default: Any = None) -> Any:
    """
    The JSON in C{path}, or C{default} if there is no such file.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return default
    try:
        return json.loads(data)
    except ValueError:
        raise CliError(
            f"{path} is damaged (not JSON): restore it from a backup or remove it"
        ) from None


class Home:
    """
    The files of one home directory.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def account_path(self) -> Path:
        return self.root / "account.json"

    @property
    def secret_path(self) -> Path:
        return self.root / "secret.json"

    @property
    def contacts_path(self) -> Path:
        return self.root / "contacts.json"

    @property
    def messages_path(self) -> Path:
        return self.root / "messages.jsonl"

    @property
    def seen_path(self) -> Path:
        return self.root / "seen.jsonl"

    @property
    def cursor_path(self) -> Path:
        return self.root / "cursor.json"

    def path(self, name: str) -> Path:
        """
        Any other file of the home (for command groups with their own state).
        """
        return self.root / name

    def ensure(self) -> Path:
        """
        Create the home (mode 0700) if it does not exist yet.
        """
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise CliError(f"cannot create the home directory {self.root}: {e.strerror}") from None
        return self.root

    def account(self) -> Account | None:
        account: Account | None = read_json(self.account_path)
        return account

    def save_account(self, account: Account) -> None:
        self.ensure()
        write_json(self.account_path, account)
