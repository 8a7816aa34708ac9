"""
The byte-copy fix for the iroh bindings (L{kezchat.p2p.uniffi_patch}).

It reaches into generated code, so these tests fail loudly when the
installed bindings are not the ones it was written for: a new iroh wheel
must be checked (and the fingerprint updated) before it is allowed in.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from kezchat.p2p import uniffi_patch


class UniffiPatchTests(SynchronousTestCase):
    def test_pinned_version(self) -> None:
        """
        The installed bindings are the pinned ones (setup.cfg says the same).
        """
        self.assertEqual(uniffi_patch.installed_version(), uniffi_patch.IROH_VERSION)
        with open(os.path.join(os.path.dirname(__file__), "..", "setup.cfg")) as f:
            self.assertIn(f"iroh=={uniffi_patch.IROH_VERSION}", f.read())

    def test_generated_code_unchanged(self) -> None:
        """
        The method replaced is byte for byte the one the fix was written
        against.
        """
        self.assertEqual(uniffi_patch.fingerprint(), uniffi_patch.ORIGINAL_WRITE_SHA256)

    def test_applied(self) -> None:
        from iroh import iroh_ffi

        self.assertTrue(uniffi_patch.apply())
        self.assertTrue(uniffi_patch.is_applied())
        self.assertIs(iroh_ffi._UniffiRustBufferBuilder.write, uniffi_patch._write)

    def test_round_trip(self) -> None:
        """
        Bytes lowered into a Rust buffer through the patched copy come back
        identical, for sizes around the buffer's growth steps and for
        bytes-like values that are not C{bytes}: a sender's reused
        C{bytearray}, a slice of one (copied without a detour through
        C{bytes}), a read-only view and a strided one.
        """
        from iroh import iroh_ffi

        uniffi_patch.apply()
        converter = iroh_ffi._UniffiFfiConverterBytes
        for size in (0, 1, 15, 16, 17, 4095, 65536, 262160, 1 << 20):
            value = os.urandom(size)
            larger = bytearray(b"<" + value + b">")
            forms = [
                value,
                bytearray(value),
                memoryview(value),
                memoryview(larger)[1 : size + 1],
                memoryview(bytearray(value * 2))[::2] if size else memoryview(b""),
            ]
            for form in forms:
                expected = bytes(form)
                buffer = converter.lower(form)
                self.assertEqual(buffer.len, 4 + size)
                self.assertEqual(converter.lift(buffer), expected)

    def test_buffer_reusable(self) -> None:
        """
        The Rust buffer holds its own copy: a sender may refill its
        C{bytearray} as soon as the value is lowered.
        """
        from iroh import iroh_ffi

        uniffi_patch.apply()
        reused = bytearray(os.urandom(1 << 16))
        sent = bytes(reused)
        buffer = iroh_ffi._UniffiFfiConverterBytes.lower(memoryview(reused)[:1000])
        reused[:] = bytes(len(reused))
        self.assertEqual(iroh_ffi._UniffiFfiConverterBytes.lift(buffer), sent[:1000])

    def test_read_side_unchanged(self) -> None:
        """
        The generated read side is byte for byte the one that slices the
        Rust buffer in one copy (it needs no patch); a new version that
        copies per byte would show here first.
        """
        self.assertEqual(uniffi_patch.read_fingerprint(), uniffi_patch.READ_SHA256)
