"""
File attachments inside messages (the web app's inline and chunked files):
sending them, and saving received ones to a directory.

Chunks may arrive in any order and across several runs of C{listen}: the
chunks already received are in the home's message store, so a
L{FileSaver} starts by collecting the unfinished files from there and
writes each file once its last piece arrives, checked against the
announced size and BLAKE3. Only verified messages contribute.
"""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kezchat.cli.errors import CliError
from kezchat.cli.home import fsync_dir
from kezchat.e2e import (
    INLINE_MAX_BYTES,
    MAX_CHUNKED_BYTES,
    ChunkAssembler,
    PlaintextError,
    chunked_file,
    inline_file,
)
from kezchat.manifests.sealing import b64url_decode


def read_attachment(path: str) -> tuple[str, str, bytes]:
    """
    The name, MIME type and bytes of a file to send (blocking).

    @raise CliError: unreadable, or over the 10 MiB message limit.
    """
    try:
        size = os.path.getsize(path)
        if size > MAX_CHUNKED_BYTES:
            raise CliError(
                f"{path} is {size} bytes; messages carry files up to {MAX_CHUNKED_BYTES}"
                " bytes: use `kez-chat share` for larger ones"
            )
        with open(path, "rb") as f:
            data = f.read(MAX_CHUNKED_BYTES + 1)
    except OSError as e:
        raise CliError(f"cannot read {path}: {e.strerror}") from None
    if len(data) > MAX_CHUNKED_BYTES:
        raise CliError(f"{path} grew past {MAX_CHUNKED_BYTES} bytes while being read")
    name = os.path.basename(path) or "file"
    mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return name, mime, data


def attachment_plaintexts(name: str, mime: str, data: bytes) -> list[dict[str, Any]]:
    """
    The messages that carry a file: one inline message up to 80 KiB, else
    an announcement followed by its chunks.
    """
    if len(data) <= INLINE_MAX_BYTES:
        return [inline_file(name, mime, data)]
    header, chunks = chunked_file(name, mime, data)
    return [header, *chunks]


def _free_path(directory: Path, name: str) -> Path:
    """
    C{directory/name}, or C{name (1).ext}, C{name (2).ext}, ... if taken.
    """
    candidate = directory / name
    stem, suffix = os.path.splitext(name)
    n = 1
    while candidate.exists():
        candidate = directory / f"{stem} ({n}){suffix}"
        n += 1
    return candidate


def write_new_file(directory: Path, name: str, data: bytes) -> Path:
    """
    Write C{data} under a name not yet taken in C{directory}, atomically
    (blocking). C{name} carries no path separator (the plaintext checks
    refuse one).
    """
    directory.mkdir(parents=True, exist_ok=True)
    target = _free_path(directory, name)
    tmp = directory / f".{name}.{os.getpid()}.part"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, target)  # never replaces a file that appeared meanwhile
    except FileExistsError:
        target = _free_path(directory, name)
        os.link(tmp, target)
    finally:
        os.unlink(tmp)
    fsync_dir(directory)
    return target


class FileSaver:
    """
    Turns verified file messages into files in C{directory}.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._headers: dict[str, dict[str, Any]] = {}
        self._chunks: dict[str, dict[int, dict[str, Any]]] = {}
        self._done: set[str] = set()

    def remember(self, plaintexts: Iterable[dict[str, Any]]) -> None:
        """
        Take in pieces received by earlier runs (without writing anything):
        files completed back then are marked done.
        """
        for plaintext in plaintexts:
            self._collect(plaintext)
        for file_id in list(self._headers):
            if self._assembler(file_id) is not None:
                self._done.add(file_id)

    def _collect(self, p: dict[str, Any]) -> str | None:
        if p.get("type") == "file" and p.get("mode") == "chunked":
            self._headers[p["file_id"]] = p
            return p["file_id"]
        if p.get("type") == "file_chunk":
            self._chunks.setdefault(p["file_id"], {})[p["i"]] = p
            return p["file_id"]
        return None

    def _assembler(self, file_id: str) -> ChunkAssembler | None:
        header = self._headers.get(file_id)
        if header is None or len(self._chunks.get(file_id, {})) < header["n"]:
            return None
        assembler = ChunkAssembler(header)
        for chunk in self._chunks[file_id].values():
            assembler.add(chunk)
        return assembler if assembler.complete else None

    def take(self, plaintext: dict[str, Any]) -> tuple[str, bytes] | None:
        """
        The (name, bytes) of the file this verified message completes, if
        any (cheap; the writing is L{write_new_file}, off the reactor).

        @raise PlaintextError: the pieces do not make the announced file.
        """
        if plaintext.get("type") == "file" and plaintext.get("mode") == "inline":
            return plaintext["name"], b64url_decode(plaintext["data"])
        file_id = self._collect(plaintext)
        if file_id is None or file_id in self._done:
            return None
        assembler = self._assembler(file_id)
        if assembler is None:
            return None
        self._done.add(file_id)
        return self._headers[file_id]["name"], assembler.assemble()


__all__ = [
    "FileSaver",
    "PlaintextError",
    "attachment_plaintexts",
    "read_attachment",
    "write_new_file",
]
