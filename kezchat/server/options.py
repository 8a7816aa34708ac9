"""
Table-driven C{twistd} options: each setting is one row naming its flag,
its environment variable, its default and its help, because operators
script against those names (systemd units, compose files). Both servers'
options (L{kezchat.server.config.ChatOptions}, L{kezchat.sigserver.config.SigOptions})
are built this way.

This module imports nothing but Twisted's option parser: twistd loads the
options to print C{--help} before any reactor is chosen.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from twisted.python import usage

#: (flag, environment variable, default, help)
Row = tuple[str, str, "str | None", str]
#: a repeatable option: (flag, environment variable, default list, help)
RepeatableRow = tuple[str, str, list[str], str]


def parameters(table: Sequence[Row]) -> list[list[object]]:
    """
    C{optParameters} for a table: each help names its variable and default.
    """
    return [
        [flag, None, None, f"{help} (${env}) [default: {default}]"]
        for flag, env, default, help in table
    ]


def parse_switch(name: str, value: str | None) -> bool:
    """
    An C{on}/C{off} setting.

    @raise usage.UsageError: for anything else.
    """
    if value not in ("on", "off"):
        raise usage.UsageError(f"--{name} is on or off")
    return value == "on"


class TableOptions(usage.Options):
    """
    Options read from a L{table} (and L{repeatable}); a flag given on the
    command line wins over its environment variable, which wins over the
    default.

    Subclasses set C{optParameters = parameters(table)} and an C{opt_<flag>}
    method per repeatable option that appends to C{self[flag]}.
    """

    table: Sequence[Row] = ()
    repeatable: Sequence[RepeatableRow] = ()

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.environ = os.environ if environ is None else environ
        super().__init__()
        for flag, _env, _default, _help in self.repeatable:
            self[flag] = []

    def opt_version(self) -> None:
        """
        Print kezchat's version and exit.
        """
        from kezchat import __version__

        print(f"kezchat {__version__}")
        raise SystemExit(0)

    def _setting(self, flag: str, env: str, default: str | None) -> str | None:
        if self[flag] is not None:
            return str(self[flag])
        return self.environ.get(env, default) or default

    def settings(self) -> dict[str, str | None]:
        """
        Every table setting by flag, with the repeatable ones filled in
        from their variables (space-separated) or defaults.
        """
        for flag, env, default, _ in self.repeatable:
            if not self[flag]:
                self[flag] = self.environ.get(env, "").split() or list(default)
        return {flag: self._setting(flag, env, default) for flag, env, default, _ in self.table}
