"""
Serving the built web app (SPEC §3.5).

A built SPA is a few hundred KiB of files that never change while the
server runs, so they are read into memory once, off the reactor thread,
when the service starts; serving is then a dictionary lookup. Unknown
paths fall back to C{index.html} (client-side routing); the API's paths
never reach this resource.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
from dataclasses import dataclass

from twisted.application.service import Service
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

from kezchat.errors import KezError

log = Logger()

IMMUTABLE = b"public, max-age=31536000, immutable"


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: bytes
    etag: bytes


def packaged_web_dir() -> str:
    """
    Where the package keeps its built web app: C{kezchat/web/}, beside
    the top of the package (where C{setup.py} copies C{web/dist}), not
    beside this module.
    """
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(package, "web")


def load_assets(directory: str) -> dict[str, Asset]:
    """
    Every file below C{directory}, keyed by its URL path (C{/assets/x.js}).
    Runs in a thread.
    """
    assets = {}
    for root, _dirs, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            url = "/" + os.path.relpath(path, directory).replace(os.sep, "/")
            with open(path, "rb") as f:
                body = f.read()
            kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
            if kind.startswith("text/") or kind in ("application/javascript", "image/svg+xml"):
                kind += "; charset=utf-8"
            etag = b'"' + hashlib.sha256(body).hexdigest()[:32].encode() + b'"'
            assets[url] = Asset(body, kind.encode(), etag)
    return assets


def content_security_policy(connect_sources: list[str]) -> bytes:
    connect = " ".join(["'self'", *connect_sources])
    return (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; media-src 'self' blob:; font-src 'self'; "
        f"connect-src {connect}; object-src 'none'; base-uri 'self'; "
        "form-action 'self'; frame-ancestors 'none'"
    ).encode()


class WebApp(Resource, Service):
    """
    The SPA as a resource, and the service that loads it.

    Its refusals are raised as L{KezError}s for the resource that mounts
    it (L{kezchat.http.app.ChatResource}) to render and count like every
    other API error.
    """

    isLeaf = True

    def __init__(self, directory: str, connect_sources: list[str]) -> None:
        Resource.__init__(self)
        self.directory = directory
        self._csp = content_security_policy(connect_sources)
        self._assets: dict[str, Asset] | None = None

    def startService(self) -> None:
        Service.startService(self)
        d = deferToThread(load_assets, self.directory)

        def loaded(assets: dict[str, Asset]) -> None:
            self._assets = assets
            if "/index.html" not in assets:
                log.warn("the web app in {dir} has no index.html", dir=self.directory)

        d.addCallbacks(loaded, lambda f: log.failure("cannot load the web app", f))

    def render(self, request: IRequest) -> bytes:
        """
        @raise KezError: C{method_not_allowed}, C{unavailable} (still
            loading), C{not_found}.
        """
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            raise KezError("method_not_allowed", "the web app is read-only")
        if self._assets is None:
            raise KezError("unavailable", "the web app is loading")
        path = "/" + "/".join(s.decode("utf-8") for s in request.postpath)
        asset = self._assets.get(path)
        if asset is not None and path.startswith("/assets/"):
            request.setHeader(b"cache-control", IMMUTABLE)
        else:
            asset = asset or self._assets.get("/index.html")
            request.setHeader(b"cache-control", b"no-cache")
        if asset is None:
            raise KezError("not_found", "no such page")
        request.setHeader(b"content-security-policy", self._csp)
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"referrer-policy", b"no-referrer")
        request.setHeader(b"x-frame-options", b"DENY")
        request.setHeader(b"etag", asset.etag)
        if request.getHeader(b"if-none-match") == asset.etag:
            request.setResponseCode(304)
            return b""
        request.setHeader(b"content-type", asset.content_type)
        request.setHeader(b"content-length", b"%d" % len(asset.body))
        return b"" if request.method == b"HEAD" else asset.body
