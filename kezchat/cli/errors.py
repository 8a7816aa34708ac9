"""
The one exception a command raises for an expected failure.
"""

from __future__ import annotations

#: exit status for an expected failure (server unreachable, wrong words, ...)
EXIT_FAILURE = 1
#: exit status for a command line that does not parse
EXIT_USAGE = 2


class CliError(Exception):
    """
    An expected failure: C{main} prints C{message} as one line on stderr
    and exits with C{exit_code}, never with a traceback.

    The message should say what happened and what to do about it.
    """

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message
