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
        bytes-like values that are not C{bytes}.
        """
        from iroh import iroh_ffi

        uniffi_patch.apply()
        converter = iroh_ffi._UniffiFfiConverterBytes
        for size in (0, 1, 15, 16, 17, 4095, 65536, 262160, 1 << 20):
            value = os.urandom(size)
            for form in (value, bytearray(value), memoryview(value)):
                buffer = converter.lower(form)
                self.assertEqual(buffer.len, 4 + size)
                self.assertEqual(converter.lift(buffer), value)

    def test_copy_is_one_memmove(self) -> None:
        """
        A megabyte is copied at C speed: far below what the per-byte loop
        needs (about a second), so a silently reverted patch shows here.
        """
        import time

        from iroh import iroh_ffi

        uniffi_patch.apply()
        value = os.urandom(1 << 20)
        started = time.perf_counter()
        for _ in range(20):
            buffer = iroh_ffi._UniffiFfiConverterBytes.lower(value)
            buffer.free()
        self.assertLess(time.perf_counter() - started, 1.0)
