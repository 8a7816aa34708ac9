"""
The C{twistd kezsig} plugin. Only a ServiceMaker: the server is imported
when the service is made, after twistd has installed the chosen reactor.
"""

from twisted.application.service import ServiceMaker

kezsig = ServiceMaker(
    "KEZ sigchain server",
    "kezchat.sigserver.tap",
    "KEZ sigchains: append-only logs of events signed by ed25519 keys",
    "kezsig",
)
