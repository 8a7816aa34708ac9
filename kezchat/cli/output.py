"""
What a command prints: sentences for people, or JSON lines for scripts.

With C{--json}, stdout carries exactly one JSON object per line and
nothing else; warnings and prompts always go to stderr, so a script can
read stdout without filtering.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO


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
            self.stdout.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")
        elif human is not None:
            self.stdout.write(human + "\n")
        else:
            return
        self.stdout.flush()

    def say(self, text: str) -> None:
        """
        Text for a person only (not shown in JSON mode).
        """
        if not self.json:
            self.stdout.write(text + "\n")
            self.stdout.flush()

    def warn(self, text: str) -> None:
        """
        A warning on stderr, in both modes.
        """
        self.stderr.write(f"kez-chat: warning: {text}\n")
        self.stderr.flush()

    def info(self, text: str) -> None:
        """
        Progress or status on stderr (both modes; never mixed into stdout).
        """
        self.stderr.write(text + "\n")
        self.stderr.flush()
