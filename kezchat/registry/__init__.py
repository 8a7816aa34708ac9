"""
The home server's handles (SPEC §3.1, C{handles}) and what it keeps for
each of them: the manifest mirror (SPEC §3.4, C{mirror}).

The registry's names are importable from here, as they were when it was
one module, C{kezchat.registry}.
"""

from kezchat.protocol.registration import REGISTRATION_TAG, REGISTRATION_TYPE
from kezchat.registry.handles import RecordCache, Registry, RegistryPolicy

__all__ = [
    "REGISTRATION_TAG",
    "REGISTRATION_TYPE",
    "RecordCache",
    "Registry",
    "RegistryPolicy",
]
