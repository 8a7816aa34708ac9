"""
The ground floor's quarantine: what kezchat borrows from outside its own
rules. C{twistedprivate} holds every reliance on Twisted's private API
(checked by C{tests/test_twisted_private.py}); C{aio} is the one bridge
between Twisted and asyncio (nats-py, asyncpg).
"""
