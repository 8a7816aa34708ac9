"""
The NATS side of kezchat (SPEC §5).

nats-server, not this package, carries the messages. This package is what
the chat-server adds to it: the auth-callout responder that turns a KEZ
key into a NATS user confined to its own inbox, the bridge that joins the
HTTP relay and NATS into one message fabric, and the JetStream stream that
holds messages for clients who are offline.

nats-py is an asyncio library; kezchat runs it on Twisted's asyncio reactor
(one process, one event loop). L{kezchat.compat.aio} holds the few
conversions between the two worlds.
"""
