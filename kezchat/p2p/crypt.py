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
before it keeps anything it decrypted, and the digest of a private file reveals
nothing about its content (a digest of the plaintext would let anyone who
has the file confirm what a private manifest entry is).

The work is done in native code over buffers that are reused, not per
piece in Python objects: pieces are read from the file into one buffer and
encrypted straight into the caller's batch buffer (OpenSSL's
ChaCha20-Poly1305 through C{cryptography}, several times faster than
libsodium's here and byte for byte the same construction), and hashing
takes a whole batch at a time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from blake3 import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

#: plaintext bytes per piece
CHUNK = 256 * 1024
#: bytes each piece grows by (the Poly1305 tag)
TAG = 16
#: ciphertext bytes of a whole piece
PIECE = CHUNK + TAG
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
    return ChaCha20Poly1305(key).encrypt(_nonce(index, last), plain, AAD)


def decrypt_piece(key: bytes, index: int, last: bool, cipher: bytes) -> bytes:
    """
    @raise DecryptError: if the piece is not piece C{index} (and, when
        C{last}, the final one) of a file encrypted under C{key}.
    """
    try:
        return ChaCha20Poly1305(key).decrypt(_nonce(index, last), cipher, AAD)
    except InvalidTag as e:
        raise DecryptError(f"piece {index} does not authenticate") from e


class FileEncryptor:
    """
    Reads a file piece by piece and produces its ciphertext pieces;
    blocking (file reads and ChaCha20), so callers run it off the reactor.

    @ivar size: the plaintext size, fixed when the file was opened; a file
        that changed size since fails loudly rather than sending something
        else under the offer's digest.
    """

    def __init__(self, path: str, key: bytes, size: int | None = None) -> None:
        self._file = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by close()
        self.size = os.fstat(self._file.fileno()).st_size if size is None else size
        self._aead = ChaCha20Poly1305(key)
        self._count = chunk_count(self.size)
        self._index = 0
        self._plain = memoryview(bytearray(CHUNK))

    def __enter__(self) -> FileEncryptor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def _read_exactly(self, want: int) -> memoryview:
        view = self._plain[:want]
        got = 0
        while got < want:
            n = self._file.readinto(view[got:])
            if not n:
                raise OSError(f"{self._file.name} changed while it was being sent")
            got += n
        return view

    def encrypt_into(self, out: bytearray | memoryview, pieces: int) -> int:
        """
        Encrypt up to C{pieces} next pieces into C{out}, one after the
        other (C{out} holds at least C{pieces} * L{PIECE} bytes).

        @return: the number of ciphertext bytes written, 0 after the last
            piece.
        @raise OSError: if the file ends early (it shrank since it was offered).
        """
        target = memoryview(out)
        written = 0
        for _ in range(pieces):
            if self._index >= self._count:
                break
            last = self._index == self._count - 1
            want = CHUNK if not last else self.size - CHUNK * (self._count - 1)
            plain = self._read_exactly(want)
            self._aead.encrypt_into(
                _nonce(self._index, last), plain, AAD, target[written : written + want + TAG]
            )
            written += want + TAG
            self._index += 1
        return written

    def next_piece(self) -> bytes | None:
        """
        The next ciphertext piece, or C{None} after the last.

        @raise OSError: if the file ends early (it shrank since it was offered).
        """
        piece = bytearray(PIECE)
        written = self.encrypt_into(piece, 1)
        return bytes(piece[:written]) if written else None


#: pieces encrypted and hashed per pass of L{ciphertext_digest}
_DIGEST_BATCH = 16


def ciphertext_digest(path: str, key: bytes) -> tuple[str, int]:
    """
    BLAKE3 (hex) of the ciphertext of the file at C{path} under C{key},
    and the file's size; blocking.
    """
    hasher = blake3()
    batch = memoryview(bytearray(_DIGEST_BATCH * PIECE))
    with FileEncryptor(path, key) as pieces:
        while written := pieces.encrypt_into(batch, _DIGEST_BATCH):
            hasher.update(batch[:written])
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
        self._aead = ChaCha20Poly1305(self.key)
        self._hasher = blake3()
        self._count = chunk_count(self.size)
        self._index = 0

    def open_into(self, cipher: bytes | memoryview, sizes: list[int], out: memoryview) -> int:
        """
        Decrypt the next pieces, of C{sizes}, that follow each other in
        C{cipher}, into C{out} one after the other.

        @return: the number of plaintext bytes written.
        @raise DecryptError: if one does not authenticate, or there are
            more pieces than the offer's size allows.
        """
        view = memoryview(cipher)
        self._hasher.update(view)
        start = written = 0
        for size in sizes:
            if self._index >= self._count:
                raise DecryptError("more pieces than the offer's size allows")
            index, last = self._index, self._index == self._count - 1
            if size < TAG:
                raise DecryptError(f"piece {index} is shorter than its tag")
            try:
                self._aead.decrypt_into(
                    _nonce(index, last),
                    view[start : start + size],
                    AAD,
                    out[written : written + size - TAG],
                )
            except InvalidTag as e:
                raise DecryptError(f"piece {index} does not authenticate") from e
            start += size
            written += size - TAG
            self._index += 1
        return written

    def open_piece(self, cipher: bytes) -> bytes:
        """
        Decrypt the next piece.

        @raise DecryptError: if it does not authenticate.
        """
        out = bytearray(max(0, len(cipher) - TAG))
        self.open_into(cipher, [len(cipher)], memoryview(out))
        return bytes(out)

    def finish(self) -> None:
        """
        @raise DecryptError: if pieces are missing or the digest differs.
        """
        if self._index != self._count:
            raise DecryptError(f"the transfer ended after {self._index} of {self._count} pieces")
        if self._hasher.hexdigest() != self.expected_blake3:
            raise DecryptError("the BLAKE3 digest of what arrived is not the offered one")
