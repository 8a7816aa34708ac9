"""
RFC 8785 canonical JSON: the only byte form KEZ ever signs.
"""

from typing import Any

import rfc8785


def canonical_json(value: Any) -> bytes:
    """
    Serialise C{value} as RFC 8785 (JCS) bytes.

    @raise ValueError: if C{value} holds something JCS cannot represent
        (floats out of range, integers beyond 2**53, non-string keys, ...).
    """
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, OverflowError) as e:
        raise ValueError(f"not canonicalisable: {e}") from e
