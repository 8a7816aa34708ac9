"""
What a command prints: sentences for people, or JSON lines for scripts.

With C{--json}, stdout carries exactly one JSON object per line and
nothing else; warnings and prompts always go to stderr, so a script can
read stdout without filtering.

Text that came from the network (message text, file names, handles,
server error messages) may carry terminal escape sequences, carriage
returns that overwrite a line, newlines that forge another line, or
bidirectional overrides that make C{invoice\\u202efdp.exe} read
C{invoiceexe.pdf}. L{visible} makes every such character visible as an
escape; the composing code applies it to each piece of network text, and
L{Output} applies it once more to everything it prints (keeping only its
own line breaks), so a forgotten call cannot reach the terminal raw.
"""

from __future__ import annotations

import json
import re
import sys
import unicodedata
from typing import Any, TextIO

#: Unicode categories never printed raw: controls (C0, DEL, C1), format
#: characters (bidi embeddings, overrides and isolates, zero-width spaces,
#: the BOM), line and paragraph separators, surrogates
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
#: format characters that only join emoji into one picture: harmless, and
#: escaping them would break ordinary emoji
_ALLOWED = frozenset({"\u200d"})
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\e"}


def _hidden(char: str) -> bool:
    return char not in _ALLOWED and unicodedata.category(char) in _HIDDEN_CATEGORIES


def _escape(char: str) -> str:
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def visible(text: object) -> str:
    """
    C{text} (any value, as C{str()} shows it) with every control, format,
    bidi and line-separating character replaced by a visible escape
    (C{\\e}, C{\\n}, C{\\u202e}, ...): safe to print on a terminal as one
    line.
    """
    text = text if isinstance(text, str) else str(text)
    if text.isascii() and text.isprintable():
        return text
    return "".join(_escape(c) if _hidden(c) else c for c in text)


def visible_lines(text: str) -> str:
    """
    L{visible} for text of several lines of our own: each line made safe,
    the line breaks between them kept.
    """
    return "\n".join(visible(line) for line in text.split("\n"))


_JSON_UNSAFE = re.compile(
    "[\u007f-\u009f\u00ad\u061c\u200b\u200c\u200e\u200f\u2028-\u202e\u2060-\u206f\ufeff"
    "\ufff9-\ufffb\U000e0000-\U000e007f]"
)


def _json_escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def json_line(obj: dict[str, Any]) -> str:
    """
    C{obj} as one JSON line. Non-ASCII text stays readable, but the
    characters a terminal would act on (C1 controls, bidi and zero-width
    format characters, line separators) are written as C{\\u} escapes, as
    JSON itself does for C0 controls, so even C{--json} output is safe to
    look at. The JSON value is unchanged.
    """
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return _JSON_UNSAFE.sub(_json_escape, text)


class Output:
    """
    The two streams of one invocation and the chosen mode.
    """

    def __init__(self, json_mode: bool, stdout: TextIO | None = None, stderr: TextIO | None = None):
        self.json = json_mode
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr

    def emit(self, obj: dict[str, Any], human: str | None = None) -> None:
        """
        Report one result: C{obj} as a JSON line in JSON mode, else
        C{human} (if given) as text. Flushed at once, so a script reading
        a long-running command (C{listen}) sees each line as it happens.
        """
        if self.json:
            self.stdout.write(json_line(obj) + "\n")
        elif human is not None:
            self.stdout.write(visible_lines(human) + "\n")
        else:
            return
        self.stdout.flush()

    def say(self, text: str) -> None:
        """
        Text for a person only (not shown in JSON mode).
        """
        if not self.json:
            self.stdout.write(visible_lines(text) + "\n")
            self.stdout.flush()

    def warn(self, text: str) -> None:
        """
        A warning on stderr, in both modes (one line: whatever it quotes
        is made visible).
        """
        self.stderr.write(f"kez-chat: warning: {visible(text)}\n")
        self.stderr.flush()

    def info(self, text: str) -> None:
        """
        Progress or status on stderr (both modes; never mixed into stdout).
        """
        self.stderr.write(visible_lines(text) + "\n")
        self.stderr.flush()
