"""
Files encrypted in chunks under a one-time content key.

A file is cut into L{CHUNK}-byte pieces (the last one shorter, an empty
file one empty piece); piece M{i} travels as ChaCha20-Poly1305 (IETF) of
the piece under the content key with the nonce::

    3 zero bytes || i as 8 bytes big-endian || 1 if it is the last piece else 0

and L{AAD} as associated data.  This is the STREAM construction: each
piece is authenticated on its own, so a reader can decrypt as it goes with
memory flat in the file size; the counter in the nonce makes a reordered
or repeated piece fail, and the last-piece flag makes a truncated stream
(a missing end) or an extended one fail.  The nonces are fixed because
every content key encrypts exactly one file (L{new_content_key} for each
share and each manifest entry): there is no nonce to reuse.

Encryption is deterministic for a given key and file, so a sender can
compute the BLAKE3 of the ciphertext up front and produce the same bytes
again whenever a reader asks, without keeping an encrypted copy.  BLAKE3
is taken over the ciphertext, the bytes that travel: the receiver checks it
before anything is decrypted, and the digest of a private file reveals
nothing about its content (a digest of the plaintext would let anyone who
has the file confirm what a private manifest entry is).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from blake3 import blake3
from nacl.bindings import (
    crypto_aead_chacha20poly1305_ietf_ABYTES,
    crypto_aead_chacha20poly1305_ietf_decrypt,
    crypto_aead_chacha20poly1305_ietf_encrypt,
)
from nacl.exceptions import CryptoError

#: plaintext bytes per piece
CHUNK = 256 * 1024
#: bytes each piece grows by (the Poly1305 tag)
TAG = crypto_aead_chacha20poly1305_ietf_ABYTES
#: associated data binding pieces to this format
AAD = b"kez-chat-file-v1"
#: the largest file size accepted from an offer (2**48 bytes, 256 TiB)
MAX_SIZE = 1 << 48


class DecryptError(ValueError):
    """
    A piece did not authenticate: tampered, reordered, truncated or the
    wrong key.
    """


def chunk_count(size: int) -> int:
    """
    How many pieces a C{size}-byte file has (at least one).
    """
    return max(1, -(-size // CHUNK))


def encrypted_size(size: int) -> int:
    """
    The ciphertext length of a C{size}-byte file.
    """
    return size + TAG * chunk_count(size)


def piece_sizes(size: int) -> Iterator[int]:
    """
    The ciphertext length of each piece of a C{size}-byte file, in order.
    """
    count = chunk_count(size)
    for index in range(count):
        plain = CHUNK if index < count - 1 else size - CHUNK * (count - 1)
        yield plain + TAG


def _nonce(index: int, last: bool) -> bytes:
    return b"\0\0\0" + index.to_bytes(8, "big") + (b"\1" if last else b"\0")


def encrypt_piece(key: bytes, index: int, last: bool, plain: bytes) -> bytes:
    return crypto_aead_chacha20poly1305_ietf_encrypt(plain, AAD, _nonce(index, last), key)


def decrypt_piece(key: bytes, index: int, last: bool, cipher: bytes) -> bytes:
    """
    @raise DecryptError: if the piece is not piece C{index} (and, when
        C{last}, the final one) of a file encrypted under C{key}.
    """
    try:
        return crypto_aead_chacha20poly1305_ietf_decrypt(cipher, AAD, _nonce(index, last), key)
    except CryptoError as e:
        raise DecryptError(f"piece {index} does not authenticate") from e


class FileEncryptor:
    """
    Reads a file piece by piece and yields its ciphertext pieces; blocking
    (file reads and ChaCha20), so callers run L{next_piece} off the reactor.

    @ivar size: the plaintext size, fixed when the file was opened; a file
        that changed size since fails loudly rather than sending something
        else under the offer's digest.
    """

    def __init__(self, path: str, key: bytes, size: int | None = None) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close()
        self.size = os.fstat(self._file.fileno()).st_size if size is None else size
        self._key = key
        self._count = chunk_count(self.size)
        self._index = 0

    def __enter__(self) -> FileEncryptor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def next_piece(self) -> bytes | None:
        """
        The next ciphertext piece, or C{None} after the last.

        @raise OSError: if the file ends early (it shrank since it was offered).
        """
        if self._index >= self._count:
            return None
        last = self._index == self._count - 1
        want = CHUNK if not last else self.size - CHUNK * (self._count - 1)
        plain = self._file.read(want)
        if len(plain) != want:
            raise OSError(f"{self._file.name} changed while it was being sent")
        piece = encrypt_piece(self._key, self._index, last, plain)
        self._index += 1
        return piece


def ciphertext_digest(path: str, key: bytes) -> tuple[str, int]:
    """
    BLAKE3 (hex) of the ciphertext of the file at C{path} under C{key},
    and the file's size; blocking.
    """
    hasher = blake3()
    with FileEncryptor(path, key) as pieces:
        while (piece := pieces.next_piece()) is not None:
            hasher.update(piece)
        return hasher.hexdigest(), pieces.size


@dataclass
class PieceCheck:
    """
    The receiving side: checks pieces in order against the content key and,
    over the whole stream, the BLAKE3 digest the offer named.
    """

    key: bytes
    size: int
    expected_blake3: str

    def __post_init__(self) -> None:
        self._hasher = blake3()
        self._count = chunk_count(self.size)
        self._index = 0

    def open_piece(self, cipher: bytes) -> bytes:
        """
        Decrypt the next piece.

        @raise DecryptError: if it does not authenticate.
        """
        if self._index >= self._count:
            raise DecryptError("more pieces than the offer's size allows")
        self._hasher.update(cipher)
        plain = decrypt_piece(self.key, self._index, self._index == self._count - 1, cipher)
        self._index += 1
        return plain

    def finish(self) -> None:
        """
        @raise DecryptError: if pieces are missing or the digest differs.
        """
        if self._index != self._count:
            raise DecryptError(f"the transfer ended after {self._index} of {self._count} pieces")
        if self._hasher.hexdigest() != self.expected_blake3:
            raise DecryptError("the BLAKE3 digest of what arrived is not the offered one")
