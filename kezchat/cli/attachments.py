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
import secrets
import unicodedata
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


#: the longest name written, in UTF-8 bytes (NAME_MAX is 255 on most file
#: systems; room is left for the " (n)" that makes a name free)
MAX_NAME_BYTES = 200
#: the longest extension kept when a name is shortened
_MAX_SUFFIX_BYTES = 16
_STRIPPED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def safe_file_name(name: str) -> str:
    """
    A name to save a received file under: C{name} without control,
    bidi-override and invisible characters (C{invoice\u202efdp.exe} is
    saved as C{invoicefdp.exe}, what it really is), without leading dots
    (no hidden files, never C{..}), shortened to L{MAX_NAME_BYTES} bytes
    with its extension kept, or C{"file"} when nothing is left.
    """
    kept = "".join(
        c for c in name if unicodedata.category(c) not in _STRIPPED_CATEGORIES
    ).replace("/", "_").replace("\\", "_")
    kept = kept.strip().lstrip(".").strip()
    if len(kept.encode("utf-8")) > MAX_NAME_BYTES:
        stem, suffix = os.path.splitext(kept)
        if len(suffix.encode("utf-8")) > _MAX_SUFFIX_BYTES:
            stem, suffix = kept, ""
        room = MAX_NAME_BYTES - len(suffix.encode("utf-8"))
        stem = stem.encode("utf-8")[:room].decode("utf-8", "ignore")
        kept = stem + suffix
    return kept or "file"


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
    Write C{data} under L{safe_file_name}(C{name}), or a free variant of
    it, in C{directory}, atomically (blocking). The data goes to a short
    temporary name first, so a long name cannot fail half-way; the final
    name is linked, never replacing a file that appeared meanwhile.

    @raise OSError: the directory refused (full, read-only, ...); nothing
        is left behind.
    """
    name = safe_file_name(name)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".kez-{secrets.token_hex(6)}.part"
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        while True:
            target = _free_path(directory, name)
            try:
                os.link(tmp, target)  # never replaces a file that appeared meanwhile
                break
            except FileExistsError:
                continue
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    fsync_dir(directory)
    return target


class FileSaver:
    """
    Turns verified file messages into files in C{directory}.

    A chunked file is keyed by its sender's key and its C{file_id}: one
    sender's chunks never join another sender's file, and a second
    announcement of a C{file_id} the same sender already used is refused
    (it would swap the file's contents).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._headers: dict[tuple[str, str], dict[str, Any]] = {}
        self._chunks: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
        self._done: set[tuple[str, str]] = set()

    def remember(self, pieces: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """
        Take in pieces received by earlier runs, as (sender key,
        plaintext), without writing anything: files completed back then
        are marked done.
        """
        for sender, plaintext in pieces:
            try:
                self._collect(sender, plaintext)
            except PlaintextError:
                continue  # refused back then too
        for key in list(self._headers):
            if self._assembler(key) is not None:
                self._done.add(key)

    def _collect(self, sender: str, p: dict[str, Any]) -> tuple[str, str] | None:
        if p.get("type") == "file" and p.get("mode") == "chunked":
            key = (sender, p["file_id"])
            if key in self._headers:
                if self._headers[key] == p:
                    return None  # the same announcement again
                raise PlaintextError(
                    f"file_id {p['file_id']!r} was already used by this sender: refused"
                )
            self._headers[key] = p
            return key
        if p.get("type") == "file_chunk":
            key = (sender, p["file_id"])
            if key in self._done:
                return None
            self._chunks.setdefault(key, {}).setdefault(p["i"], p)
            return key
        return None

    def _assembler(self, key: tuple[str, str]) -> ChunkAssembler | None:
        header = self._headers.get(key)
        if header is None or len(self._chunks.get(key, {})) < header["n"]:
            return None
        assembler = ChunkAssembler(header)
        for chunk in self._chunks[key].values():
            assembler.add(chunk)
        return assembler if assembler.complete else None

    def take(self, sender: str, plaintext: dict[str, Any]) -> tuple[str, bytes] | None:
        """
        The (name, bytes) of the file this verified message from C{sender}
        (its key) completes, if any (cheap; the writing is
        L{write_new_file}, off the reactor).

        @raise PlaintextError: the pieces do not make the announced file,
            or the sender reused a C{file_id}.
        """
        if plaintext.get("type") == "file" and plaintext.get("mode") == "inline":
            return plaintext["name"], b64url_decode(plaintext["data"])
        key = self._collect(sender, plaintext)
        if key is None or key in self._done:
            return None
        assembler = self._assembler(key)
        if assembler is None:
            return None
        self._done.add(key)
        self._chunks.pop(key, None)
        return self._headers[key]["name"], assembler.assemble()


__all__ = [
    "FileSaver",
    "PlaintextError",
    "attachment_plaintexts",
    "read_attachment",
    "safe_file_name",
    "write_new_file",
]
