"""
The OpenAPI 3.1 documents of both servers, kept beside the code as data
(L{kezchat.http.openapi} serves them at C{GET /v1/openapi.json}).

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
    # json.loads gives Any; the shipped document is a JSON object
    parsed: dict[str, Any] = json.loads(document_bytes(name))
    return parsed

