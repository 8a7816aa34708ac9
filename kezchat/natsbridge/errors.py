"""
The one exception family an operator sees when NATS is set up wrongly.
"""


class NatsSetupError(Exception):
    """
    NATS is configured but cannot work as configured: wrong reactor,
    missing or wrong seed files. Raised when the service is built, so that
    C{twistd} stops with the message instead of running half a server.
    """
