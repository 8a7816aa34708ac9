"""
Consistent copies of a live SQLite database, for C{kezchat-admin backup}.

Copying the database file of a running server is not a backup: in WAL mode
the newest commits live in the C{-wal} file, and a copy taken mid-write can
be torn. SQLite's online backup API copies the pages of one read
transaction instead: a snapshot of the last commit, taken while the server
keeps writing (WAL readers never block the writer). The copy is written
beside its destination under a temporary name, checked, switched out of WAL
mode so it is one self-contained file, and only then linked into place, so
a half-written backup never carries the final name; a backup killed
midway leaves its temporary file, which the next one in that directory
removes (L{kezchat.tempfiles}).

The same code backs up the chat-server's database and the sig-server's:
both are plain SQLite files with a C{schema_version} table.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from kezchat import tempfiles


class BackupError(Exception):
    """
    The backup could not be made; nothing was left at the destination.
    """


@dataclass(frozen=True)
class BackupReport:
    """
    What was copied: enough for an operator to see the backup is sane.

    @ivar rows: row count of each table, by name.
    @ivar schema_version: the highest migration applied, or C{None} for a
        database without a C{schema_version} table.
    """

    size: int
    schema_version: int | None
    rows: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        tables = ", ".join(f"{name} {count}" for name, count in sorted(self.rows.items()))
        return f"{self.size} bytes, schema version {self.schema_version}; rows: {tables}"


def _open_source(path: str) -> sqlite3.Connection:
    """
    Open the live database without ever creating one where a path is
    mistyped (C{mode=rw}). Read-write, because only a connection that may
    write removes the C{-wal} and C{-shm} files it had to create when it
    closes (the server being stopped); a read-only file system gets a
    read-only connection instead. (Run as root, SQLite gives files it
    creates the database file's owner, so the server can still use them.)
    """
    if "://" in path:
        raise BackupError(f"{path} is not a SQLite file (use the database's own dump tool)")
    if not os.path.isfile(path):
        raise BackupError(f"{path}: no such database file")
    base = "file:" + quote(os.path.abspath(path))
    try:
        return sqlite3.connect(base + "?mode=rw", uri=True, timeout=30)
    except sqlite3.OperationalError:
        try:
            return sqlite3.connect(base + "?mode=ro", uri=True, timeout=30)
        except sqlite3.Error as e:
            raise BackupError(f"{path}: {e}") from None


def _copy(source: str, partial: str) -> BackupReport:
    src = _open_source(source)
    try:
        dst = sqlite3.connect(partial)
        try:
            # pages=-1: every page in one step, inside one read transaction,
            # so the copy is one commit's snapshot however busy the writer is
            # (a stepwise copy restarts whenever another connection writes)
            src.backup(dst, pages=-1)
            dst.execute("PRAGMA journal_mode=DELETE")
            check = dst.execute("PRAGMA integrity_check").fetchall()
            if check != [("ok",)]:
                raise BackupError(f"the copy fails its integrity check: {check[:5]}")
            return _describe(dst, partial)
        finally:
            dst.close()
    except sqlite3.Error as e:
        raise BackupError(f"{source}: {e}") from None
    finally:
        src.close()


def _describe(conn: sqlite3.Connection, path: str) -> BackupReport:
    tables = [
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    rows = {t: conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables}
    version = None
    if "schema_version" in tables:
        version = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
    return BackupReport(os.path.getsize(path), version, rows)


def _fsync(path: str | os.PathLike[str], directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def backup_database(source: str, destination: str | os.PathLike[str]) -> BackupReport:
    """
    Copy the SQLite database at C{source} to the new file C{destination}
    (mode 0600), consistently, while other processes may be writing it.

    @raise BackupError: C{source} is not a readable SQLite database, or
        C{destination} exists or cannot be written. Nothing is left behind.
    """
    target = Path(destination)
    if target.exists():
        raise BackupError(f"{target} already exists; refusing to overwrite it")
    directory = str(target.parent or ".")
    # what an earlier backup killed midway left here
    tempfiles.clean_stale(directory, ".partial")
    try:
        fd, partial = tempfiles.create(directory, target.name, ".partial")
    except OSError as e:
        raise BackupError(f"{target}: {e}") from None
    os.close(fd)
    try:
        report = _copy(source, partial)
        _fsync(partial)
        try:
            # link, not rename: it fails rather than replace a file that
            # appeared at the destination meanwhile
            os.link(partial, target)
        except OSError as e:
            raise BackupError(f"{target}: {e}") from None
        _fsync(target.parent, directory=True)
        return report
    finally:
        os.unlink(partial)


def backup_to_stream(source: str, out: BinaryIO) -> BackupReport:
    """
    Back up C{source} and write the copy to C{out} (C{--out -}: a backup
    taken inside a container and saved outside it). The copy is staged in
    the temporary directory first.
    """
    staging = tempfile.mkdtemp(prefix="kezchat-backup-")
    try:
        path = os.path.join(staging, "backup.db")
        report = backup_database(source, path)
        with open(path, "rb") as f:
            shutil.copyfileobj(f, out, 1024 * 1024)
        out.flush()
        return report
    finally:
        shutil.rmtree(staging, ignore_errors=True)
