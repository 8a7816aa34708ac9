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
    from twisted.internet import reactor

    from kezchat.natsbridge.aio import WrongReactorError
    from kezchat.sigserver.service import makeService as make_sig_service

    try:
        service = make_sig_service(options.config, reactor)
    except WrongReactorError as e:  # --db postgresql://... without -r asyncio
        raise SystemExit(f"kezsig: {e}") from None
    service.stop_reactor_on_failure = True
    return service
