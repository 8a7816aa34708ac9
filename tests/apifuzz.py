"""
Property-based API testing with schemathesis, against a real server.

L{fuzz} draws requests for every operation of an OpenAPI document, valid
ones (C{positive}) and invalid ones (C{negative}), lets a per-server
C{prepare} callback make them real (registered handles, fresh signatures:
otherwise nearly everything would stop at the 401), sends them with
C{requests} and checks each answer:

  - never a 5xx;
  - status, content type, headers and body are what the document says;
  - a refused request (4xx) changed nothing stored: every table of the
    server's SQLite file is compared before and after.

It is blocking code: tests run it in a thread (C{deferToThread}) while the
server under test runs on the reactor thread.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, reject, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisException, Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

#: (case, Hypothesis data, the request's kwargs for requests, its body bytes)
#: → kwargs to send; may change the case before and the headers after
Prepare = Callable[[Any, st.DataObject, str], dict[str, Any]]


@dataclass
class Report:
    operations: int = 0
    requests: int = 0
    #: status → how many answers had it
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


class Stored:
    """
    What a server has stored, read through a separate read-only connection.

    A full snapshot (every row of every table) is taken only when SQLite's
    C{data_version} says another connection committed since the last one,
    so requests that change nothing cost nothing to check.
    """

    def __init__(self, db_path: str) -> None:
        self._con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, check_same_thread=False)
        self._version: int | None = None
        self._rows: dict[str, list[str]] = {}

    def version(self) -> int:
        return self._con.execute("PRAGMA data_version").fetchone()[0]

    def snapshot(self) -> dict[str, list[str]]:
        version = self.version()
        if version != self._version:
            tables = [
                row[0]
                for row in self._con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            ]
            self._rows = {
                t: sorted(map(repr, self._con.execute(f'SELECT * FROM "{t}"'))) for t in tables
            }
            self._version = version
        return self._rows

    def close(self) -> None:
        self._con.close()


def body_bytes(case: Any) -> bytes | None:
    """
    The exact bytes a case's body is sent as (signatures cover them).
    """
    body = case.body
    if body is None or type(body).__name__ == "NotSet":
        return None
    if isinstance(body, bytes):
        return body
    return json.dumps(body).encode("utf-8")


def transport(case: Any, base_url: str) -> dict[str, Any]:
    """
    The request of a case as C{requests} keyword arguments, its body as
    bytes.
    """
    kwargs = case.as_transport_kwargs(base_url=base_url)
    kwargs.pop("json", None)
    kwargs.pop("data", None)
    data = body_bytes(case)
    if data is not None:
        kwargs["data"] = data
        kwargs["headers"]["Content-Type"] = case.media_type or "application/json"
    return kwargs


def fuzz(
    document: dict[str, Any],
    base_url: str,
    db_path: str,
    prepare: Prepare,
    max_examples: int = 25,
    streaming: frozenset[str] = frozenset(),
) -> Report:
    """
    Run every operation of C{document} against C{base_url}.

    @param streaming: operation ids whose 200 answer never ends (SSE): only
        its status, content type and first line are checked.
    """
    schema = schemathesis.openapi.from_dict(document)
    report = Report()
    session = requests.Session()
    stored = Stored(db_path)
    try:
        for result in schema.get_all_operations():
            operation = result.ok()
            report.operations += 1
            raw = operation.definition.raw
            operation_id = raw.get("operationId", operation.label)
            modes = [GenerationMode.POSITIVE]
            if _can_be_invalid(raw):
                modes.append(GenerationMode.NEGATIVE)
            for mode in modes:
                _run(
                    operation, operation_id, mode, base_url, stored, prepare,
                    max_examples, operation_id in streaming, session, report,
                )
    finally:
        session.close()
        stored.close()
    return report


def _can_be_invalid(operation: dict[str, Any]) -> bool:
    """
    Whether any request to C{operation} breaks its schema: not when all it
    takes is path segments of any non-empty text (an empty segment cannot
    be sent), nor when it takes nothing.
    """
    if operation.get("requestBody"):
        return True
    return any(
        parameter["in"] != "path" or set(parameter["schema"]) - {"type", "minLength"}
        for parameter in operation.get("parameters", [])
    )


def _run(
    operation: Any,
    operation_id: str,
    mode: GenerationMode,
    base_url: str,
    stored: Stored,
    prepare: Prepare,
    max_examples: int,
    streaming: bool,
    session: requests.Session,
    report: Report,
) -> None:
    failures_before = len(report.failures)

    def record(text: str) -> None:
        # a few per operation and mode are enough to act on
        if len(report.failures) - failures_before < 3:
            report.failures.append(f"{operation_id} ({mode.value}): {text}")

    @settings(
        max_examples=max_examples,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
    def one(case: Any, data: st.DataObject) -> None:
        kwargs = prepare(case, data, base_url)
        before = stored.snapshot()
        try:
            response = session.request(
                **kwargs, timeout=10, allow_redirects=False, stream=streaming
            )
        except (requests.exceptions.InvalidHeader, UnicodeError, ValueError):
            # not sendable as HTTP (e.g. a header value outside latin-1)
            reject()
        report.requests += 1
        report.statuses[response.status_code] = report.statuses.get(response.status_code, 0) + 1
        try:
            if streaming and response.status_code == 200:
                content_type = response.headers.get("content-type", "")
                first = next(response.iter_lines(), b"")
                if not content_type.startswith("text/event-stream") or first != b"retry: 3000":
                    record(f"stream opened with {content_type!r}, {first!r}")
                return
            try:
                case.validate_response(response, checks=CHECKS)
            except (Exception, BaseExceptionGroup) as e:  # schemathesis: a FailureGroup
                record(f"{kwargs['method']} {kwargs['url']} → {response.status_code}: {e}"[:600])
            if response.status_code >= 400 and stored.snapshot() != before:
                record(f"refused ({response.status_code}) but the database changed")
        finally:
            response.close()

    try:
        one()
    except Unsatisfiable:
        # nothing in the operation can be made invalid (no parameters, no
        # body): only the valid requests exist
        if mode is not GenerationMode.NEGATIVE:
            record("no request could be generated")
    except HypothesisException as e:
        record(f"could not generate: {e}")
