"""
Shared-files manifests (SPEC §7, design option A): a signed JSON blob
listing an owner's shared files, committed to by BLAKE3 in their sigchain.

Owners build entries with L{public_entry} / L{private_entry}, sign them
with L{build_manifest}, publish L{manifest_bytes} and append a
C{set_shared_files} event with L{shared_files_body}.  Readers call
L{read_manifest} with the digest from the owner's chain.
"""

from kezchat.manifests.blob import (
    MANIFEST_TYPE,
    MAX_MANIFEST_BYTES,
    Manifest,
    build_manifest,
    check_manifest_shape,
    manifest_blake3,
    manifest_bytes,
    shared_files_body,
    verify_manifest,
)
from kezchat.manifests.entries import (
    PRIVATE,
    PUBLIC,
    Entry,
    check_entry,
    private_entry,
    public_entry,
)
from kezchat.manifests.errors import ManifestError
from kezchat.manifests.reader import ManifestView, VisibleEntry, read_manifest
from kezchat.manifests.sealing import (
    UnsealError,
    new_content_key,
    open_content_key,
    seal_content_key,
)

__all__ = [
    "MANIFEST_TYPE",
    "MAX_MANIFEST_BYTES",
    "PRIVATE",
    "PUBLIC",
    "Entry",
    "Manifest",
    "ManifestError",
    "ManifestView",
    "UnsealError",
    "VisibleEntry",
    "build_manifest",
    "check_entry",
    "check_manifest_shape",
    "manifest_blake3",
    "manifest_bytes",
    "new_content_key",
    "open_content_key",
    "private_entry",
    "public_entry",
    "read_manifest",
    "seal_content_key",
    "shared_files_body",
    "verify_manifest",
]
