"""
The OpenAPI 3.1 documents of both servers, kept beside the code and served
at C{GET /v1/openapi.json}.

The documents are hand-written JSON (C{kezchat.json}, C{kezsig.json}), not
generated from the routes: they carry what the routes cannot say (signed
texts, error codes, the SSE framing). C{tests/test_openapi.py} keeps them
honest: every Klein route is documented, every documented path is routed,
and the documents validate.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any

from twisted.web.iweb import IRequest

from kezchat.http.errors import json_bytes
from kezchat.http.routing import Routes

#: the servers with a document: C{kezchat} and C{kezsig}
DOCUMENTS = ("kezchat", "kezsig")


@cache
def document_bytes(name: str) -> bytes:
    """
    The document of server C{name} as shipped, read once.
    """
    if name not in DOCUMENTS:
        raise ValueError(f"no OpenAPI document for {name!r}")
    return files(__name__).joinpath(f"{name}.json").read_bytes()


def document(name: str) -> dict[str, Any]:
    """
    The document of server C{name}, parsed (a fresh copy each call).
    """
    return json.loads(document_bytes(name))


def install(routes: Routes, name: str) -> None:
    """
    Serve server C{name}'s document at C{GET /v1/openapi.json}, with CORS
    open so browser-based API tools can read it.
    """
    body = document_bytes(name)

    @routes.route("/v1/openapi.json", methods=["GET"], name="openapi")
    def openapi(request: IRequest) -> bytes:
        request.setHeader(b"access-control-allow-origin", b"*")
        return json_bytes(request, body)
