"""
The OpenAPI documents (C{kezchat/openapi/}) against the servers they
describe: valid OpenAPI 3.1, every routed path documented and every
documented path routed, every error code with the status the code has,
and the document served at C{GET /v1/openapi.json}.
"""

from __future__ import annotations

import re

from openapi_spec_validator import validate
from twisted.trial.unittest import TestCase

from kezchat import openapi
from kezchat.errors import STATUS_BY_CODE
from kezchat.http.routing import Routes
from tests.sigsupport import start_sig_server
from tests.support import http_client, json_of, start_server

#: methods werkzeug adds by itself
_IMPLICIT = {"HEAD", "OPTIONS"}


def routed(routes: Routes) -> set[tuple[str, str]]:
    """
    (OpenAPI path, lower-case method) for every rule of a Klein app.
    """
    found = set()
    for rule in routes.app.url_map.iter_rules():
        path = re.sub(r"<(?:[a-z]+:)?([A-Za-z_]+)>", r"{\1}", rule.rule)
        for method in set(rule.methods or ()) - _IMPLICIT:
            found.add((path, method.lower()))
    return found


def documented(doc: dict) -> set[tuple[str, str]]:
    return {
        (path, method)
        for path, item in doc["paths"].items()
        for method in item
        if method in ("get", "put", "post", "delete", "patch", "options", "head")
    }


def error_codes(doc: dict) -> dict[str, set[int]]:
    """
    Every documented error code → the statuses it is documented under
    (error responses only: a 2xx answer may report what another request
    would be refused with, as the registration pre-check does).
    """
    codes: dict[str, set[int]] = {}
    responses = [
        (status, response)
        for item in doc["paths"].values()
        for operation in item.values()
        for status, response in operation["responses"].items()
        if not status.startswith("2")
    ]
    unrouted = doc["components"]["responses"]
    responses += [("404", unrouted["UnknownPath"]), ("405", unrouted["WrongMethod"])]
    for status, response in responses:
        schema = response.get("content", {}).get("application/json", {}).get("schema", {})
        for option in schema.get("anyOf", [schema]):
            enum = (
                option.get("properties", {})
                .get("error", {})
                .get("properties", {})
                .get("code", {})
                .get("enum", [])
            )
            for code in enum:
                codes.setdefault(code, set()).add(int(status))
    return codes


class DocumentTests(TestCase):
    def test_valid(self) -> None:
        """
        Both documents are valid OpenAPI 3.1.
        """
        for name in openapi.DOCUMENTS:
            doc = openapi.document(name)
            self.assertEqual(doc["openapi"], "3.1.0")
            validate(doc)

    def test_error_statuses(self) -> None:
        """
        A code is documented only under the status the server answers it
        with, and every code the servers use is documented.
        """
        seen: set[str] = set()
        for name in openapi.DOCUMENTS:
            for code, statuses in error_codes(openapi.document(name)).items():
                seen.add(code)
                if code in STATUS_BY_CODE:
                    self.assertEqual(statuses, {STATUS_BY_CODE[code]}, code)
        self.assertEqual(set(STATUS_BY_CODE) - seen, set())

    def test_authenticated_operations_document_their_signature(self) -> None:
        """
        Every operation that takes X-KEZ-Auth (or C{auth}) says what it signs.
        """
        doc = openapi.document("kezchat")
        for path, item in doc["paths"].items():
            for operation in item.values():
                names = {p["name"] for p in operation.get("parameters", [])}
                if names & {"X-KEZ-Auth", "auth"}:
                    self.assertIn("Signed text:", operation.get("description", ""), path)
                    self.assertIn(f"\\n{path.split('{')[0]}", operation["description"], path)


class RoutesTests(TestCase):
    timeout = 30

    async def assertWrongMethods(self, url: str, doc: dict) -> None:
        """
        Every documented path answers the methods it does not document as
        the document's C{WrongMethod} response says: 405, the JSON error,
        and an C{Allow} header listing the documented methods.
        """
        client = http_client(self)
        for path, item in doc["paths"].items():
            documented_methods = {m.upper() for m in item}
            concrete = re.sub(r"\{[a-z_]+\}", "alice", path)
            for method in {"GET", "POST", "PUT", "DELETE", "PATCH"} - documented_methods:
                response = await client.request(method, url + concrete)
                body = await json_of(response)
                self.assertEqual(
                    (response.code, body["error"]["code"]), (405, "method_not_allowed"), path
                )
                allow = set(response.headers.getRawHeaders("allow")[0].split(", "))
                self.assertEqual(allow - {"HEAD", "OPTIONS"}, documented_methods, path)

    async def test_chat_server(self) -> None:
        """
        The chat-server routes exactly what its document describes, and
        serves the document.
        """
        server = await start_server(self)
        doc = openapi.document("kezchat")
        self.assertEqual(routed(server.parts.http.routes), documented(doc))
        response = await http_client(self).get(f"{server.url}/v1/openapi.json")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])
        self.assertEqual(await json_of(response), doc)
        await self.assertWrongMethods(server.url, doc)

    async def test_sig_server(self) -> None:
        """
        The same for the sig-server.
        """
        server = await start_sig_server(self)
        doc = openapi.document("kezsig")
        self.assertEqual(routed(server.parts.resource.routes), documented(doc))
        response = await http_client(self).get(f"{server.url}/v1/openapi.json")
        self.assertEqual(response.code, 200)
        self.assertEqual(await json_of(response), doc)
        await self.assertWrongMethods(server.url, doc)
