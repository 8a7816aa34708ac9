"""
kezchat: the home server and clients of KEZ chat.
"""

__version__ = "0.1.0"
