"""
Log observers selectable with C{--log-format} (or C{twistd --logger}).
"""

import sys

from twisted.logger import ILogObserver, jsonFileLogObserver


def json_observer() -> ILogObserver:
    """
    One JSON object per line on standard output: what journald, docker and
    log shippers want.
    """
    # no RFC 7464 record separator (Twisted's default prefixes every
    # record with \x1e), so each line is a plain JSON object
    return jsonFileLogObserver(sys.stdout, recordSeparator="")
