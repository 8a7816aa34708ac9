"""
The wire rules both the servers and the clients follow, in one place:
signed request texts and their checks (C{auth}), NATS subjects and
permissions (C{subjects}), NATS keys (C{natskeys}) and the registration
document's constants (C{registration}). Pure: nothing here imports a
server part, so C{kezchat.client} and C{kezchat.cli} can use it.
"""
