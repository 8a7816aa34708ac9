"""
The C{twistd kezchat} plugin. Only a ServiceMaker: the server is imported
when the service is made, after twistd has installed the chosen reactor
(importing Klein earlier would install the default one).
"""

from twisted.application.service import ServiceMaker

kezchat = ServiceMaker(
    "KEZ chat home server",
    "kezchat.server.tap",
    "KEZ chat: handle registry, WebFinger, message relay (HTTP + SSE), web app, NATS callout",
    "kezchat",
)
