"""
A faster byte copy for the C{iroh} Python bindings.

The code uniffi generates for C{iroh} 1.2.0 copies every outgoing C{bytes}
value into the Rust buffer one byte at a time, in Python
(C{_UniffiRustBufferBuilder.write}), which caps a stream at a few MiB/s.
This module replaces that one method with a C{ctypes.memmove} of the whole
value.  It is isolated here because it reaches into generated, private
code: it patches only when the installed bindings are exactly the ones it
was written against (the package version and the source of the method it
replaces), and otherwise leaves them alone — slow but correct — and says
so.  C{tests/test_p2p_patch.py} fails loudly when upstream changes.

The read side of the generated code copies a whole value at once and is
left alone (L{READ_SHA256} pins it).  The compiled side cannot be fixed
from here: the Rust half of the bindings converts C{bytes} to and from
its own C{Vec<u8>} one element at a time too (uniffi's generic
C{Vec<T>} lift and lower), on the calling thread, and that is what bounds
a stream through these bindings (C{bench/p2p.py}'s bare-Iroh column).
"""

from __future__ import annotations

import ctypes
import hashlib
import inspect
import warnings
from importlib import metadata
from typing import Any

#: the only bindings this patch was checked against (setup.cfg pins it)
IROH_VERSION = "1.2.0"

#: SHA-256 of the source of the generated method being replaced
ORIGINAL_WRITE_SHA256 = "80a30c45daf7f127f8d5137f736f90066d36ec166a28ea47d9d4f0fc1d941f84"

#: SHA-256 of the source of the generated read side
#: (C{_UniffiRustBufferStream.read}), left as it is: it slices the Rust
#: buffer through a C{ctypes} pointer, one copy in C, so incoming bytes
#: need no fix
READ_SHA256 = "fbecdf3c9824b90205b91ffde5479571ecb496c141b641d6a818704b08bfeec1"

_applied = False
_original_write = None


def _original_write_source() -> str:
    from iroh import iroh_ffi

    original = _original_write or iroh_ffi._UniffiRustBufferBuilder.write
    return inspect.getsource(original)


def fingerprint() -> str:
    """
    The SHA-256 of the installed bindings' C{write} method source.
    """
    return hashlib.sha256(_original_write_source().encode("utf-8")).hexdigest()


def read_fingerprint() -> str:
    """
    The SHA-256 of the installed bindings' read-side method source.
    """
    from iroh import iroh_ffi

    source = inspect.getsource(iroh_ffi._UniffiRustBufferStream.read)
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def installed_version() -> str:
    return metadata.version("iroh")


def _source(
    value: bytes | bytearray | memoryview,
) -> tuple[bytes | ctypes.Array[ctypes.c_char], int]:
    """
    C{value} as something C{ctypes.memmove} reads from without a copy,
    and its length in bytes: C{bytes} as they are, a writable buffer (the
    C{bytearray} a sender fills and reuses, or a slice of one) through
    C{from_buffer}; anything else is copied to C{bytes} first.
    """
    if isinstance(value, bytes):
        return value, len(value)
    view = memoryview(value)
    if view.readonly or not view.c_contiguous or not view.nbytes:
        return view.tobytes(), view.nbytes
    return (ctypes.c_char * view.nbytes).from_buffer(view), view.nbytes


def _write(self: Any, value: Any) -> None:
    """
    Copy C{value} into the buffer in one C{memmove}.
    """
    source, size = _source(value)
    with self._reserve(size):
        if not size:
            return
        destination = ctypes.addressof(self.rbuf.data.contents) + self.rbuf.len
        ctypes.memmove(destination, source, size)


def is_applied() -> bool:
    return _applied


def apply() -> bool:
    """
    Install the fast copy if the bindings are the known ones.

    @return: whether the patch is in place.
    """
    global _applied, _original_write
    if _applied:
        return True
    from iroh import iroh_ffi

    version = installed_version()
    if version != IROH_VERSION or fingerprint() != ORIGINAL_WRITE_SHA256:
        warnings.warn(
            f"iroh {version} is not the {IROH_VERSION} this client's byte-copy fix was "
            "written for; transfers will be slow",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    _original_write = iroh_ffi._UniffiRustBufferBuilder.write
    setattr(iroh_ffi._UniffiRustBufferBuilder, "write", _write)  # noqa: B010
    _applied = True
    return True
