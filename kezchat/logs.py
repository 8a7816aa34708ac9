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
    return jsonFileLogObserver(sys.stdout)
