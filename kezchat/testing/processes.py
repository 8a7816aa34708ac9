"""
Launching C{twistd kezchat} (or any twistd plugin) as a child process of
the benchmarks and of L{kezchat.testing.hostile}: the launcher script that
raises the fd limit first (thousands of connections would hit the soft
limit), and a process protocol that keeps only the tail of the output
(the access log alone is a line per request) and says when it ended.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol

_RAISE_FD_LIMIT = (
    "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
    "resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))\n"
)
_RUN_TWISTD = (
    "from twisted.scripts.twistd import run\n"
    "sys.argv = ['twistd'] + sys.argv[1:]\n"
    "run()\n"
)


def twistd_launcher(raise_fd_limit: bool = True, prelude: str = "") -> str:
    """
    A C{python -c} script that runs twistd with the arguments after it:
    with the soft fd limit raised to the hard one (unless told not to),
    after C{prelude} (say, a tracer to install).
    """
    if raise_fd_limit:
        return "import resource, sys\n" + _RAISE_FD_LIMIT + prelude + _RUN_TWISTD
    return "import sys\n" + prelude + _RUN_TWISTD


class TailOutput(ProcessProtocol):
    """
    Keeps the last 64 KiB of a process's stdout and stderr (for the error
    a failed run reports) and drops the rest cheaply.

    @ivar ended: fires with None once the process is gone.
    """

    def __init__(self) -> None:
        self.output = b""
        self.ended: Deferred[None] = Deferred()

    def processEnded(self, reason: object) -> None:
        self.ended.callback(None)

    def outReceived(self, data: bytes) -> None:
        self.output = (self.output + data)[-65536:]

    errReceived = outReceived


def spawn_twistd(
    reactor: Any,
    protocol: ProcessProtocol,
    twistd_args: list[str],
    env: dict[str, str],
    path: str,
    launcher: str | None = None,
) -> Any:
    """
    Start this Python running C{launcher} (by default L{twistd_launcher}'s)
    with C{twistd_args} in C{path}; the process transport.
    """
    return reactor.spawnProcess(
        protocol,
        sys.executable,
        [sys.executable, "-c", launcher or twistd_launcher(), *twistd_args],
        env=env,
        path=path,
    )
