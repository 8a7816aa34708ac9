"""
This home's device name: which durable NATS consumer is this client's.

Every device of an account reads its own consumer, C{inbox_<hex>_<device>},
so each gets every message; two clients sharing one consumer would split
the messages between them. The name is picked at random the first time a
home needs it and kept in the home (C{device.json}), so the same home
resumes the same consumer after a restart, and another home (another
laptop, a copy restored elsewhere) picks its own.
"""

from __future__ import annotations

import secrets
import string

from kezchat.cli.errors import CliError
from kezchat.cli.home import Home, read_json, write_json
from kezchat.protocol.subjects import check_device

DEVICE_FILE = "device.json"
#: characters and length of a picked name (36^10: two homes never collide)
ALPHABET = string.ascii_lowercase + string.digits
LENGTH = 10


def pick_device_name() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))


def device_name(home: Home) -> str:
    """
    This home's device name, picked and saved on first use (blocking: call
    off the reactor thread).

    @raise CliError: the saved name is damaged.
    """
    path = home.path(DEVICE_FILE)
    saved = read_json(path)
    if saved is None:
        name = pick_device_name()
        home.ensure()
        write_json(path, {"device": name})
        return name
    saved_name = saved.get("device") if isinstance(saved, dict) else None
    try:
        return check_device(saved_name)
    except ValueError:
        raise CliError(
            f"{path} does not hold a device name (1-16 of a-z, 0-9): fix or remove it"
        ) from None
