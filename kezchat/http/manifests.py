"""
Routes of the shared-files manifest mirror (SPEC §3.4).

    PUT /v1/manifests/<h>   signed blob, ≤ 64 KiB, X-KEZ-Auth → 201 {"blake3"}
    GET /v1/manifests/<h>   the latest blob, byte for byte | 404
"""

from __future__ import annotations

from twisted.web.iweb import IRequest

from kezchat.http.errors import json_response, read_body
from kezchat.http.routing import Routes
from kezchat.manifests import MAX_MANIFEST_BYTES
from kezchat.metrics import Metrics
from kezchat.registry.mirror import ManifestMirror

MANIFEST_CAP = MAX_MANIFEST_BYTES


def install(routes: Routes, mirror: ManifestMirror, metrics: Metrics) -> None:
    @routes.route(
        "/v1/manifests/<handle>", methods=["PUT"], name="manifest_put", body_cap=MANIFEST_CAP
    )
    async def put(request: IRequest, handle: str) -> bytes:
        blob = read_body(request)
        stored = await mirror.put(handle, request.getHeader(b"x-kez-auth"), blob)
        metrics.manifests_stored.inc()
        return json_response(request, {"blake3": stored.blake3}, 201)

    @routes.route("/v1/manifests/<handle>", methods=["GET"], name="manifest_get")
    async def get(request: IRequest, handle: str) -> bytes:
        stored = await mirror.get(handle)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"etag", f'"{stored.blake3}"'.encode())
        return stored.blob
