"""
Chunked file encryption (L{kezchat.p2p.crypt}): what arrives intact
decrypts to the file, and anything else — a flipped bit, pieces out of
order, a missing end, extra bytes, another key, another digest — fails.
"""

from __future__ import annotations

import os
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from kezchat.p2p import crypt
from kezchat.p2p.crypt import (
    CHUNK,
    TAG,
    DecryptError,
    FileEncryptor,
    PieceCheck,
    ciphertext_digest,
    encrypted_size,
    piece_sizes,
)

KEY = bytes(range(32))
# sizes around the piece boundaries
SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 7]


def _file(case: SynchronousTestCase, data: bytes) -> str:
    fd, path = tempfile.mkstemp(prefix="kezchat-crypt-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    case.addCleanup(os.unlink, path)
    return path


def _pieces(path: str, key: bytes = KEY) -> list[bytes]:
    out = []
    with FileEncryptor(path, key) as enc:
        while (piece := enc.next_piece()) is not None:
            out.append(piece)
    return out


def _receive(pieces: list[bytes], size: int, digest: str, key: bytes = KEY) -> bytes:
    check = PieceCheck(key, size, digest)
    plain = b"".join(check.open_piece(p) for p in pieces)
    check.finish()
    return plain


class CryptTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        for size in SIZES:
            data = os.urandom(size)
            path = _file(self, data)
            pieces = _pieces(path)
            digest, got_size = ciphertext_digest(path, KEY)
            self.assertEqual(got_size, size)
            self.assertEqual([len(p) for p in pieces], list(piece_sizes(size)))
            self.assertEqual(sum(map(len, pieces)), encrypted_size(size))
            self.assertEqual(_receive(pieces, size, digest), data)

    def test_deterministic(self) -> None:
        """
        Same key and file, same ciphertext: the sender can produce what it
        hashed again at serving time.
        """
        path = _file(self, os.urandom(2 * CHUNK + 5))
        self.assertEqual(_pieces(path), _pieces(path))
        self.assertNotEqual(_pieces(path), _pieces(path, bytes(32)))

    def test_reordered(self) -> None:
        path = _file(self, os.urandom(3 * CHUNK))
        pieces = _pieces(path)
        digest, _ = ciphertext_digest(path, KEY)
        with self.assertRaises(DecryptError):
            _receive([pieces[1], pieces[0], pieces[2]], 3 * CHUNK, digest)

    def test_truncated(self) -> None:
        """
        Dropping the last piece fails, even when the size is adjusted to
        match: the last-piece flag is missing.
        """
        path = _file(self, os.urandom(3 * CHUNK))
        pieces = _pieces(path)
        digest, _ = ciphertext_digest(path, KEY)
        with self.assertRaises(DecryptError):
            _receive(pieces[:2], 3 * CHUNK, digest)
        with self.assertRaises(DecryptError):
            _receive(pieces[:2], 2 * CHUNK, digest)

    def test_extended(self) -> None:
        path = _file(self, os.urandom(CHUNK))
        pieces = _pieces(path)
        digest, _ = ciphertext_digest(path, KEY)
        with self.assertRaises(DecryptError):
            _receive([*pieces, pieces[0]], CHUNK, digest)

    def test_wrong_key(self) -> None:
        path = _file(self, b"x" * 100)
        digest, _ = ciphertext_digest(path, KEY)
        with self.assertRaises(DecryptError):
            _receive(_pieces(path), 100, digest, key=bytes(32))

    def test_other_digest(self) -> None:
        """
        Authentic pieces that are not the offered ciphertext fail on the
        digest.
        """
        path = _file(self, b"y" * 100)
        with self.assertRaises(DecryptError):
            _receive(_pieces(path), 100, "00" * 32)

    def test_file_changed(self) -> None:
        """
        A file that shrank after it was offered fails loudly at the sender.
        """
        path = _file(self, os.urandom(2 * CHUNK))
        with FileEncryptor(path, KEY, size=3 * CHUNK) as enc:
            enc.next_piece()
            enc.next_piece()
            with self.assertRaises(OSError):
                enc.next_piece()

    @settings(max_examples=60, deadline=None)
    @given(st.integers(min_value=0, max_value=2 * CHUNK + 40 - 1), st.integers(0, 7))
    def test_any_bit_flip(self, position: int, bit: int) -> None:
        """
        Flipping any one bit of the ciphertext makes the transfer fail.
        """
        size = 2 * CHUNK + 40 - 2 * TAG
        data = bytes(size)
        path = _file(self, data)
        stream = bytearray(b"".join(_pieces(path)))
        digest, _ = ciphertext_digest(path, KEY)
        stream[position] ^= 1 << bit
        sizes = list(piece_sizes(size))
        pieces, start = [], 0
        for n in sizes:
            pieces.append(bytes(stream[start : start + n]))
            start += n
        with self.assertRaises(DecryptError):
            _receive(pieces, size, digest)

    def test_max_size(self) -> None:
        self.assertGreater(crypt.MAX_SIZE, 1 << 40)


class FormatTests(SynchronousTestCase):
    """
    The pieces are the same bytes whichever library makes them: files
    offered by older clients (libsodium) and newer ones (OpenSSL through
    C{cryptography}) are interchangeable.
    """

    def test_same_as_libsodium(self) -> None:
        from nacl.bindings import crypto_aead_chacha20poly1305_ietf_encrypt

        data = os.urandom(2 * CHUNK + 9)
        path = _file(self, data)
        pieces = _pieces(path)
        plains = [data[:CHUNK], data[CHUNK : 2 * CHUNK], data[2 * CHUNK :]]
        for index, (plain, piece) in enumerate(zip(plains, pieces, strict=True)):
            last = index == len(plains) - 1
            nonce = b"\0\0\0" + index.to_bytes(8, "big") + (b"\1" if last else b"\0")
            expected = crypto_aead_chacha20poly1305_ietf_encrypt(plain, crypt.AAD, nonce, KEY)
            self.assertEqual(piece, expected)
        self.assertEqual(crypt.decrypt_piece(KEY, 2, True, pieces[2]), plains[2])

    def test_batches_equal_pieces(self) -> None:
        """
        Encrypting several pieces into one buffer gives the pieces one
        after the other, and opening them from one buffer gives the file.
        """
        for size in SIZES:
            data = os.urandom(size)
            path = _file(self, data)
            whole = b"".join(_pieces(path))
            batch = bytearray(5 * crypt.PIECE)
            stream = b""
            with FileEncryptor(path, KEY) as enc:
                while written := enc.encrypt_into(batch, 2):
                    stream += batch[:written]
            self.assertEqual(stream, whole)
            digest, _ = ciphertext_digest(path, KEY)
            check = PieceCheck(KEY, size, digest)
            out = bytearray(len(data) + 1)
            self.assertEqual(
                check.open_into(stream, list(piece_sizes(size)), memoryview(out)), size
            )
            check.finish()
            self.assertEqual(bytes(out[:size]), data)

    def test_short_piece(self) -> None:
        check = PieceCheck(KEY, 100, "00" * 32)
        with self.assertRaises(DecryptError):
            check.open_piece(b"x" * (TAG - 1))
