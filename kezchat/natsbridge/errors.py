"""
The one exception family an operator sees when NATS is set up wrongly
(defined in L{kezchat.errors}, which the floors below NATS can import).
"""

from kezchat.errors import NatsSetupError

__all__ = ["NatsSetupError"]
