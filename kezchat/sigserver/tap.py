"""
The twistd entry points of C{twistd kezsig}: C{Options} and C{makeService}.

Only the option parser is imported here; the server (and with it Klein,
which installs a reactor on import) is imported inside L{makeService},
after twistd has installed the reactor the operator chose.
"""

from __future__ import annotations

from twisted.application.service import IService

from kezchat.sigserver.config import SigOptions as Options

__all__ = ["Options", "makeService"]


def makeService(options: Options) -> IService:
    from kezchat.reactor import global_reactor
    from kezchat.sigserver.service import makeService as make_sig_service
    from kezchat.startup import ExitOnFatal, StartupError

    reactor = global_reactor()
    try:
        return make_sig_service(options.config, reactor, on_fatal=ExitOnFatal(reactor, "kezsig"))
    except StartupError as e:
        raise SystemExit(f"kezsig: {e}") from None
