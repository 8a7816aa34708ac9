"""
What one reader sees in a manifest: every public entry, and the private
entries whose content key was sealed to them (SPEC §7).  Entries wrapped
for other people are not an error; they are simply not this reader's.
"""

from __future__ import annotations

from dataclasses import dataclass

from kezchat.identity.keys import KeyPair
from kezchat.manifests.blob import verify_manifest
from kezchat.manifests.entries import PUBLIC, Entry
from kezchat.manifests.sealing import UnsealError, b64url_decode, open_content_key


@dataclass(frozen=True)
class VisibleEntry:
    """
    An entry and its content key (C{None} for a public file published
    without one).
    """

    entry: Entry
    content_key: bytes | None


@dataclass(frozen=True)
class ManifestView:
    """
    @ivar public: the public entries.
    @ivar private: the private entries this reader can open.
    @ivar unreadable: private entries wrapped for this reader whose key
        would not open: the owner signed something broken, which a client
        should show as a warning rather than hide.
    """

    owner: str
    created_at: str
    public: tuple[VisibleEntry, ...]
    private: tuple[VisibleEntry, ...]
    unreadable: tuple[Entry, ...]


def read_manifest(
    data: bytes,
    reader: KeyPair,
    *,
    owner: str | None = None,
    expected_blake3: str | None = None,
) -> ManifestView:
    """
    Verify blob C{data} and open what C{reader} may see.

    @raise ManifestError: if the blob does not verify (see L{verify_manifest}).
    """
    manifest = verify_manifest(data, owner=owner, expected_blake3=expected_blake3)
    public, private, unreadable = [], [], []
    for entry in manifest["entries"]:
        if entry["visibility"] == PUBLIC:
            key = b64url_decode(entry["key"]) if "key" in entry else None
            public.append(VisibleEntry(entry, key))
            continue
        sealed = entry["wrapped"].get(reader.public_hex)
        if sealed is None:
            continue
        try:
            private.append(VisibleEntry(entry, open_content_key(sealed, reader)))
        except UnsealError:
            unreadable.append(entry)
    return ManifestView(
        owner=manifest["owner"],
        created_at=manifest["created_at"],
        public=tuple(public),
        private=tuple(private),
        unreadable=tuple(unreadable),
    )
