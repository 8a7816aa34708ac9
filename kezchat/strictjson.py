"""
Parsing JSON from strangers: one strict reader for everything KEZ verifies.

Python's L{json} module is forgiving in ways that matter for signed data:
it accepts duplicate keys (keeping the last, so two readers of the same
bytes can disagree about what was signed), C{NaN} and C{Infinity} (which
JCS cannot represent), lone UTF-16 surrogates (which cannot be encoded
back to UTF-8), and it overflows the stack on deeply nested input.  Every
one of those is refused here with a L{JSONError}, so callers have a
single exception to map to "bad request".
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from kezchat.errors import KezError

# Far deeper than any KEZ document, far shallower than the interpreter's
# recursion limit.
MAX_DEPTH = 64


class JSONError(ValueError):
    """
    Bytes that are not a strict JSON text.
    """


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise JSONError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise JSONError(f"{name} is not JSON")


def _check(value: Any, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise JSONError("nested too deeply")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise JSONError("lone surrogate in a string") from e
    elif isinstance(value, float) and not math.isfinite(value):
        # a literal like 1e999 parses to infinity without parse_constant
        raise JSONError("number out of range")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check(key, depth + 1)
            _check(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check(item, depth + 1)


def loads(data: bytes) -> Any:
    """
    Parse UTF-8 JSON bytes strictly.

    @raise JSONError: for invalid UTF-8, invalid JSON, duplicate keys,
        non-finite numbers, lone surrogates or excessive nesting.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise JSONError(f"not UTF-8: {e.reason} at byte {e.start}") from e
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except RecursionError as e:
        raise JSONError("nested too deeply") from e
    except json.JSONDecodeError as e:
        raise JSONError(f"not JSON: {e.msg} at line {e.lineno} column {e.colno}") from e
    except JSONError:
        raise
    except ValueError as e:
        # e.g. an integer literal longer than sys.get_int_max_str_digits()
        raise JSONError(f"not JSON: {e}"[:200]) from e
    _check(value)
    return value


_WS = re.compile(r"[ \t\n\r]*")
_STRING_OR_SPACE = re.compile(r'("[^"\\]*(?:\\.[^"\\]*)*")|[ \t\n\r]+', re.DOTALL)
_RAW = json.JSONDecoder()


#: the JSON string scanner of the standard library (public, if untyped)
_scanstring: Callable[[str, int], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]


def _skip_space(text: str, index: int) -> int:
    """
    The index of the first non-space character at or after C{index}.
    """
    match = _WS.match(text, index)
    return match.end() if match is not None else index


def member_texts(text: str) -> dict[str, str]:
    """
    The JSON text of each member value of the object C{text}, exactly as
    written (numbers, escapes and key order untouched).

    Call it only on text L{loads} accepted: it relies on that for
    validity and on the absence of duplicate keys.
    """
    end = _skip_space(text, 0)
    if text[end : end + 1] != "{":
        raise JSONError("not a JSON object")
    members: dict[str, str] = {}
    index = end + 1
    while True:
        index = _skip_space(text, index)
        if text[index] == "}":
            return members
        if text[index] == ",":
            index = _skip_space(text, index + 1)
        key, index = _scanstring(text, index + 1)
        index = _skip_space(text, index) + 1  # the colon
        start = _skip_space(text, index)
        _value, index = _RAW.raw_decode(text, start)
        members[key] = text[start:index]


def one_line(text: str) -> str:
    """
    C{text} (valid JSON) on one line: white space between tokens is
    removed when there is a line break in it, and nothing else changes.
    A JSON string cannot hold a raw line break, so text without one is
    returned as is.
    """
    if "\n" not in text and "\r" not in text:
        return text
    return _STRING_OR_SPACE.sub(lambda m: m.group(1) or "", text)


def parse_json(raw: bytes) -> Any:
    """
    Decode a JSON request body strictly (L{loads}), or refuse it with
    C{bad_request}: the one parse of a body, for any transport.
    """
    try:
        return loads(raw)
    except JSONError as e:
        raise KezError("bad_request", f"the body is not valid JSON: {e}"[:200]) from None
