"""
What goes inside an envelope: text, files and P2P file offers.

A plaintext is a JSON object with a C{type}:

  - C{text}: C{{"type": "text", "text"}};
  - C{file}, inline: C{{"type": "file", "mode": "inline", "name", "mime",
    "size", "data"}}, the file itself (at most 80 KiB) in C{data};
  - C{file}, chunked: C{{"type": "file", "mode": "chunked", "file_id",
    "name", "mime", "size", "n", "blake3"}}, announcing C{n} messages
    C{{"type": "file_chunk", "file_id", "i", "data"}} (C{i} from 0) of at
    most 80 KiB each, for files up to 10 MiB; they may arrive in any order;
  - C{file_share}: C{{"type": "file_share", "name", "size", "blake3",
    "ticket", "key"}}, an offer to fetch a file peer to peer;
  - C{receipt}: C{{"type": "receipt", "status": "delivered"|"read",
    "sigs": [...]}}, naming by their envelope signatures the messages a
    device has stored (C{delivered}) or shown (C{read}); one receipt
    covers many messages. A receipt is never a conversation's message.

Binary C{data} is unpadded base64url, like every binary value in KEZ JSON.
C{blake3} is hex BLAKE3: of the whole file for a chunked file, and of the
I{encrypted} bytes the peer serves for a C{file_share} offer (the fetcher
checks what it received before decrypting anything, and the digest of a
private file reveals nothing about its content).  Types this module does not
know are returned unchanged by L{parse_plaintext}, so a newer client's
message reaches an older one as "unsupported" rather than as an error.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, TypeVar

import blake3

from kezchat.manifests.sealing import b64url_decode, b64url_encode

INLINE_MAX_BYTES = 80 * 1024
CHUNK_BYTES = 80 * 1024
MAX_CHUNKED_BYTES = 10 * 1024 * 1024
MAX_CHUNKS = -(-MAX_CHUNKED_BYTES // CHUNK_BYTES)
MAX_NAME_CHARS = 255
RECEIPT_STATUSES = ("delivered", "read")
#: envelope signatures in one receipt (a receipt stays far below a
#: message's size cap)
MAX_RECEIPT_SIGS = 1000


class PlaintextError(ValueError):
    """
    A plaintext of a known type that is missing fields or breaks a limit.
    """


def text_message(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def inline_file(name: str, mime: str, data: bytes) -> dict[str, Any]:
    """
    A file small enough to travel in one message.

    @raise PlaintextError: if C{data} is over 80 KiB.
    """
    if len(data) > INLINE_MAX_BYTES:
        raise PlaintextError(f"an inline file is at most {INLINE_MAX_BYTES} bytes")
    return {
        "type": "file",
        "mode": "inline",
        "name": name,
        "mime": mime,
        "size": len(data),
        "data": b64url_encode(data),
    }


def chunked_file(
    name: str, mime: str, data: bytes, file_id: str | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """
    The announcement and the chunk messages of a file up to 10 MiB.

    @raise PlaintextError: if C{data} is over 10 MiB.
    """
    if len(data) > MAX_CHUNKED_BYTES:
        raise PlaintextError(f"a chunked file is at most {MAX_CHUNKED_BYTES} bytes")
    file_id = os.urandom(16).hex() if file_id is None else file_id
    chunks = [
        {"type": "file_chunk", "file_id": file_id, "i": i, "data": b64url_encode(piece)}
        for i, piece in enumerate(_pieces(data))
    ]
    header = {
        "type": "file",
        "mode": "chunked",
        "file_id": file_id,
        "name": name,
        "mime": mime,
        "size": len(data),
        "n": len(chunks),
        "blake3": blake3.blake3(data).hexdigest(),
    }
    return header, chunks


def _pieces(data: bytes) -> Iterator[bytes]:
    if not data:
        yield b""
        return
    for start in range(0, len(data), CHUNK_BYTES):
        yield data[start : start + CHUNK_BYTES]


def file_share(name: str, size: int, blake3_hex: str, ticket: str, key: str) -> dict[str, Any]:
    return {
        "type": "file_share",
        "name": name,
        "size": size,
        "blake3": blake3_hex,
        "ticket": ticket,
        "key": key,
    }


def receipt(status: str, sigs: list[str]) -> dict[str, Any]:
    """
    A receipt for the messages whose envelope signatures are C{sigs}.

    @raise PlaintextError: an unknown status, or no, too many or
        malformed signatures.
    """
    return parse_plaintext({"type": "receipt", "status": status, "sigs": list(sigs)})


V = TypeVar("V")


def _field(plaintext: dict[str, Any], name: str, kind: type[V]) -> V:
    value = plaintext.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise PlaintextError(f'"{name}" is missing or of the wrong type')
    return value


def _count(plaintext: dict[str, Any], name: str, low: int, high: int) -> int:
    value = _field(plaintext, name, int)
    if not low <= value <= high:
        raise PlaintextError(f'"{name}" must be between {low} and {high}')
    return value


def _data(plaintext: dict[str, Any], limit: int) -> bytes:
    try:
        data = b64url_decode(_field(plaintext, "data", str))
    except ValueError as e:
        raise PlaintextError('"data" is not unpadded base64url') from e
    if len(data) > limit:
        raise PlaintextError(f'"data" is over {limit} bytes')
    return data


def _hex(plaintext: dict[str, Any], name: str, length: int) -> str:
    value = _field(plaintext, name, str)
    if len(value) != length or value.strip("0123456789abcdef"):
        raise PlaintextError(f'"{name}" must be {length} lowercase hex characters')
    return value


def _name(plaintext: dict[str, Any]) -> str:
    name = _field(plaintext, "name", str)
    if not name or len(name) > MAX_NAME_CHARS or "/" in name or "\\" in name or "\0" in name:
        raise PlaintextError('"name" must be a plain file name')
    return name


def parse_plaintext(plaintext: dict[str, Any]) -> dict[str, Any]:
    """
    Check a decrypted plaintext of a known type; return it unchanged.

    A file name never contains a path separator, so a client may join it
    to a download directory.

    @raise PlaintextError: for a known type with missing or wrong fields.
    """
    kind = _field(plaintext, "type", str)
    if kind == "text":
        _field(plaintext, "text", str)
    elif kind == "file":
        _name(plaintext)
        _field(plaintext, "mime", str)
        mode = _field(plaintext, "mode", str)
        if mode == "inline":
            size = _count(plaintext, "size", 0, INLINE_MAX_BYTES)
            if len(_data(plaintext, INLINE_MAX_BYTES)) != size:
                raise PlaintextError('"size" does not match "data"')
        elif mode == "chunked":
            size = _count(plaintext, "size", 0, MAX_CHUNKED_BYTES)
            n = _count(plaintext, "n", 1, MAX_CHUNKS)
            if n != max(1, -(-size // CHUNK_BYTES)):
                raise PlaintextError('"n" does not match "size"')
            _field(plaintext, "file_id", str)
            _hex(plaintext, "blake3", 64)
        else:
            raise PlaintextError('"mode" must be "inline" or "chunked"')
    elif kind == "file_chunk":
        _field(plaintext, "file_id", str)
        _count(plaintext, "i", 0, MAX_CHUNKS - 1)
        _data(plaintext, CHUNK_BYTES)
    elif kind == "file_share":
        _name(plaintext)
        _count(plaintext, "size", 0, 2**53 - 1)
        _hex(plaintext, "blake3", 64)
        _field(plaintext, "ticket", str)
        _field(plaintext, "key", str)
    elif kind == "receipt":
        if _field(plaintext, "status", str) not in RECEIPT_STATUSES:
            raise PlaintextError('"status" must be "delivered" or "read"')
        sigs = _field(plaintext, "sigs", list)
        if not 1 <= len(sigs) <= MAX_RECEIPT_SIGS:
            raise PlaintextError(f'"sigs" must name 1-{MAX_RECEIPT_SIGS} messages')
        for sig in sigs:
            if not isinstance(sig, str) or len(sig) != 128 or sig.strip("0123456789abcdef"):
                raise PlaintextError('"sigs" must be envelope signatures (128 hex)')
    return plaintext


class ChunkAssembler:
    """
    Collects the chunks of one chunked file, in any order, and gives the
    file once every chunk is there and its BLAKE3 matches the announcement.
    """

    def __init__(self, header: dict[str, Any]) -> None:
        parse_plaintext(header)
        if header.get("mode") != "chunked":
            raise PlaintextError("not a chunked file announcement")
        self.header = header
        self._chunks: dict[int, bytes] = {}

    @property
    def received(self) -> int:
        return len(self._chunks)

    @property
    def complete(self) -> bool:
        # the header is JSON, its "n" checked to be an int by parse_plaintext
        total: int = self.header["n"]
        return len(self._chunks) == total

    def add(self, chunk: dict[str, Any]) -> None:
        parse_plaintext(chunk)
        if chunk.get("type") != "file_chunk" or chunk["file_id"] != self.header["file_id"]:
            raise PlaintextError("a chunk of another file")
        if chunk["i"] >= self.header["n"]:
            raise PlaintextError("a chunk past the announced count")
        self._chunks[chunk["i"]] = b64url_decode(chunk["data"])

    def assemble(self) -> bytes:
        """
        @raise PlaintextError: if chunks are missing or the bytes do not
            match the announced size and BLAKE3.
        """
        if not self.complete:
            raise PlaintextError(f"{self.received} of {self.header['n']} chunks received")
        data = b"".join(self._chunks[i] for i in range(self.header["n"]))
        if len(data) != self.header["size"]:
            raise PlaintextError("the chunks do not add up to the announced size")
        if blake3.blake3(data).hexdigest() != self.header["blake3"]:
            raise PlaintextError("the file does not match its announced BLAKE3")
        return data
