"""
C{kezsig}: the sigchain storage server (SPEC §7), a second twistd service
in the kezchat distribution, standing in for the existing kez-sig-server.

There are no accounts: an event's signature is its authorization, and the
server stores an event only if it extends the stored chain exactly.
"""
