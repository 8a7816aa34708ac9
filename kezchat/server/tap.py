"""
The twistd entry points of C{twistd kezchat}: C{Options} and C{makeService}.
"""

from __future__ import annotations

from twisted.application.service import IService

from kezchat.server.config import ChatOptions as Options

__all__ = ["Options", "makeService"]


def makeService(options: Options) -> IService:
    from kezchat.natsbridge.errors import NatsSetupError
    from kezchat.reactor import global_reactor
    from kezchat.server.gctuning import tune_for_serving
    from kezchat.server.service import makeService as make_chat_service
    from kezchat.startup import ExitOnFatal, StartupError

    reactor = global_reactor()
    try:
        service = make_chat_service(
            options.config, reactor, on_fatal=ExitOnFatal(reactor, "kezchat")
        )
    except (NatsSetupError, StartupError) as e:
        raise SystemExit(f"kezchat: {e}") from None
    reactor.callWhenRunning(tune_for_serving)
    return service
