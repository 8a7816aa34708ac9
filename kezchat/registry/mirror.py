"""
The manifest mirror (SPEC §3.4): the home server keeps each user's latest
shared-files manifest so readers can fetch it while the owner is offline.

The server is a convenience, not an authority: it checks that an upload
is a manifest signed by the handle's primary (so it never serves junk
under someone's name), stores the bytes exactly, and leaves trust to the
reader, who checks the blob's BLAKE3 against the owner's sigchain.
"""

from __future__ import annotations

from collections.abc import Callable

from kezchat.errors import KezError
from kezchat.manifests import ManifestError, manifest_blake3, verify_manifest
from kezchat.manifests.errors import MALFORMED, TOO_LARGE
from kezchat.protocol.auth import Authenticator, body_digest
from kezchat.registry.handles import Registry
from kezchat.storage.interfaces import ManifestStore, StoredManifest


def _refusal(error: ManifestError) -> KezError:
    if error.code == MALFORMED:
        return KezError("bad_request", f"not a manifest: {error.message}")
    if error.code == TOO_LARGE:
        return KezError("payload_too_large", error.message)
    # bad_signature or wrong_owner: either way, not signed by this handle
    return KezError("bad_signature", f"the manifest is not signed by this handle's key: {error}")


class ManifestMirror:
    """
    Keeps each handle's latest shared-files manifest for others to fetch:
    only the handle's primary may replace it, and only with a blob that
    verifies as its manifest. Knows nothing of HTTP.
    """

    def __init__(
        self,
        registry: Registry,
        store: ManifestStore,
        authenticator: Authenticator,
        clock: Callable[[], float],
    ) -> None:
        """
        @param authenticator: checks the C{X-KEZ-Auth} of an upload.
        @param clock: seconds since the epoch (when a manifest was stored).
        """
        self._registry = registry
        self._store = store
        self._authenticator = authenticator
        self._clock = clock

    async def put(self, handle: str, auth: str | bytes | None, blob: bytes) -> StoredManifest:
        """
        Store C{blob} as C{handle}'s manifest.

        @param handle: the handle as it appears in the request path, which
            is also what the C{X-KEZ-Auth} signature names.
        @raise KezError: C{not_found}/C{invalid_handle} for the handle,
            401 codes for the authentication, C{bad_request} for a blob
            that is not a manifest, C{bad_signature} for one not signed by
            the handle's primary.
        """
        record = await self._registry.lookup(handle)
        self._authenticator.verify(
            record.primary, auth, "PUT", f"/v1/manifests/{handle}", [body_digest(blob)]
        )
        try:
            verify_manifest(blob, owner=record.primary)
        except ManifestError as e:
            raise _refusal(e) from None
        return await self._store.put_manifest(
            StoredManifest(record.primary, blob, manifest_blake3(blob), self._clock())
        )

    async def get(self, handle: str) -> StoredManifest:
        """
        C{handle}'s latest manifest.

        @raise KezError: C{not_found} for an unknown handle or no manifest.
        """
        record = await self._registry.lookup(handle)
        stored = await self._store.manifest(record.primary)
        if stored is None:
            raise KezError("not_found", f"{record.fqhn} has published no manifest")
        return stored
