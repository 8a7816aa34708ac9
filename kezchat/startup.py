"""
Start-up failures that end the process, loudly.

A server that cannot open its database or bind its port must not linger
without a listener, nor exit with status 0 (a supervisor reads that as a
clean stop and does not restart or alert). L{StartupError} carries one
line saying what is wrong and what to do; L{ExitOnFatal} is what the twistd
plugins use to log that line, stop the reactor (whether or not it is
running yet) and make the process exit with status 1.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading

from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger

#: the status a process ends with after a fatal start-up failure
FATAL_STATUS = 1

#: seconds the reactor gets to shut down cleanly before the process ends
#: anyway (a stuck shutdown must not keep a dead server around)
SHUTDOWN_GRACE = 10.0


class StartupError(Exception):
    """
    The server cannot start until the operator does something; the message
    is one line saying what is wrong and what to do.
    """


class ExitOnFatal:
    """
    Ends the process with status L{FATAL_STATUS} after a fatal failure:
    the reactor is stopped as soon as it runs (a failure may arrive before
    it does), and the exit status is set once twistd has finished its own
    shutdown (pid file, logs).
    """

    log = Logger()

    def __init__(self, reactor: IReactorCore, name: str) -> None:
        self._reactor = reactor
        self._name = name
        self._fired = False

    def __call__(self, message: str) -> None:
        if self._fired:
            return
        self._fired = True
        self.log.critical("{name}: {message}", name=self._name, message=message)
        atexit.register(_exit_now, FATAL_STATUS)
        deadline = threading.Timer(SHUTDOWN_GRACE, _exit_now, (FATAL_STATUS,))
        deadline.daemon = True
        deadline.start()
        self._reactor.callWhenRunning(self._stop)

    def _stop(self) -> None:
        from twisted.internet.error import ReactorNotRunning

        try:
            self._reactor.stop()
        except ReactorNotRunning:
            pass


def _exit_now(status: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(status)


__all__ = ["ExitOnFatal", "StartupError"]
