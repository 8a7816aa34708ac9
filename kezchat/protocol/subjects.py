"""
The NATS subject space of KEZ chat and the permissions that partition it.

A message for recipient R from sender S travels on C{kez.inbox.<R>.<S>}
(lowercase hex of the raw ed25519 keys). Because the broker lets S publish
only with its own key in the last token, the subject itself is proof of
the sender: nobody downstream has to trust a claim inside the payload.

Everything a user may touch is listed here, in one place, so that the
callout and the tests share a single definition (SPEC §5).
"""

from __future__ import annotations

import re
from typing import Any

from kezchat.identity.keys import is_key_hex

STREAM = "KEZ_INBOX"
INBOX_ROOT = "kez.inbox"
ALL_INBOXES = f"{INBOX_ROOT}.>"

_INBOX_SUBJECT = re.compile(r"kez\.inbox\.([0-9a-f]{64})\.([0-9a-f]{64})")
_COPY_SUBJECT = re.compile(r"kez\.inbox\.([0-9a-f]{64})\.out\.([0-9a-f]{64})")
#: the token that marks a sender's copy (see L{senders_copy_subject})
OUT_TOKEN = "out"


def inbox_subject(recipient_hex: str, sender_hex: str) -> str:
    """
    The subject of a message from C{sender_hex} to C{recipient_hex}.
    """
    return f"{INBOX_ROOT}.{_check(recipient_hex)}.{_check(sender_hex)}"


def parse_inbox_subject(subject: str) -> tuple[str, str] | None:
    """
    C{(recipient_hex, sender_hex)} of an inbox subject, or C{None}.
    """
    m = _INBOX_SUBJECT.fullmatch(subject)
    return (m.group(1), m.group(2)) if m else None


def senders_copy_subject(owner_hex: str, recipient_hex: str) -> str:
    """
    The subject of the sender's copy of a message C{owner_hex} sent to
    C{recipient_hex}: C{kez.inbox.<owner>.out.<recipient>}.

    It lies under the owner's own C{kez.inbox.<owner>.>}, so the owner's
    subscription and durable consumers already take it, and it has five
    tokens, so no user's publish permission (C{kez.inbox.*.<own key>}, four
    tokens) matches it: only the chat-server puts copies there, and a
    native client can believe one as its own sent message.
    """
    return f"{INBOX_ROOT}.{_check(owner_hex)}.{OUT_TOKEN}.{_check(recipient_hex)}"


def parse_senders_copy_subject(subject: str) -> tuple[str, str] | None:
    """
    C{(owner_hex, recipient_hex)} of a sender's-copy subject, or C{None}.
    """
    m = _COPY_SUBJECT.fullmatch(subject)
    return (m.group(1), m.group(2)) if m else None


#: a device name: what tells one client's durable consumer from another's
DEVICE = re.compile(r"[a-z0-9]{1,16}")
#: the prefix of the NATS connection name that says which device connects
#: (C{kez:<device>}; nats-py C{name=}, nats.ws C{name})
DEVICE_NAME_PREFIX = "kez:"


def consumer_name(owner_hex: str, device: str | None = None) -> str:
    """
    The name of a user's durable JetStream consumer on L{STREAM}: one per
    device (C{inbox_<hex>_<device>}), each receiving every message; without
    a device, the single legacy consumer C{inbox_<hex>}.
    """
    if device is None:
        return f"inbox_{_check(owner_hex)}"
    return f"inbox_{_check(owner_hex)}_{check_device(device)}"


def check_device(device: Any) -> str:
    """
    C{device} if it is a device name (C{[a-z0-9]{1,16}}), else C{ValueError}.
    """
    if not isinstance(device, str) or not DEVICE.fullmatch(device):
        raise ValueError("a device name is 1-16 characters a-z and 0-9")
    return device


def device_connection_name(device: str) -> str:
    """
    The NATS connection name a client on C{device} logs in with, from which
    the callout grants that device's consumer.
    """
    return DEVICE_NAME_PREFIX + check_device(device)


def device_of_connection(name: Any) -> str | None:
    """
    The device a connection name announces (see L{device_connection_name}),
    or C{None} for any other name.
    """
    if not isinstance(name, str) or not name.startswith(DEVICE_NAME_PREFIX):
        return None
    device = name[len(DEVICE_NAME_PREFIX) :]
    return device if DEVICE.fullmatch(device) else None


def consumer_filter(owner_hex: str) -> str:
    return f"{INBOX_ROOT}.{_check(owner_hex)}.>"


def reply_prefix(owner_hex: str) -> str:
    """
    The inbox prefix a user's client must use for request/reply
    (nats-py C{inbox_prefix}, nats.ws C{inboxPrefix}).
    """
    return f"_INBOX_{_check(owner_hex)}"


def _consumer_api(owner_hex: str, device: str | None) -> list[str]:
    """
    The JetStream API subjects that create (with the owner's own filter),
    inspect, delete and read one of the owner's durable consumers.
    """
    name = consumer_name(owner_hex, device)
    api = f"$JS.API.CONSUMER.%s.{STREAM}.{name}"
    return [
        f"$JS.API.CONSUMER.CREATE.{STREAM}.{name}.{consumer_filter(owner_hex)}",
        api % "INFO",
        api % "DELETE",
        f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{name}",
        f"$JS.ACK.{STREAM}.{name}.>",
    ]


def user_permissions(owner_hex: str, device: str | None = None) -> dict[str, Any]:
    """
    The C{pub}/C{sub} sections of a user JWT for the key C{owner_hex},
    connecting as C{device} (from the connection name) or as no device.

    Publish: any inbox, with the user's own key as sender; and exactly the
    JetStream API calls that manage and read the user's own durable
    consumer. The consumer is created through C{CONSUMER.CREATE.<stream>.
    <name>.<filter>}, a form in which nats-server checks that the filter in
    the request body equals the one in the subject, so a user cannot create
    their consumer over someone else's messages. The legacy
    C{CONSUMER.DURABLE.CREATE} form carries no filter and is not granted.

    A device's own consumer, C{inbox_<hex>_<device>}, is granted the same
    way, next to the legacy C{inbox_<hex>}. NATS wildcards match whole
    tokens only and a consumer name is one token, so "every consumer named
    C{inbox_<hex>_*}" cannot be said in a permission: each connection is
    granted the consumer of the device it names, and so every device of a
    user reaches exactly its own consumer — never another user's, never
    one over another filter.

    Subscribe: the user's own inbox and their own reply subjects (where pull
    consumers deliver). A shared C{_INBOX.>} would expose everyone's
    replies, JetStream deliveries included, so it is never granted.
    """
    allow = [f"{INBOX_ROOT}.*.{owner_hex}", *_consumer_api(owner_hex, None)]
    if device is not None:
        allow += _consumer_api(owner_hex, device)
    return {
        "pub": {"allow": allow},
        "sub": {
            "allow": [
                consumer_filter(owner_hex),
                f"{reply_prefix(owner_hex)}.>",
            ]
        },
    }


def _check(key_hex: str) -> str:
    if not is_key_hex(key_hex):
        raise ValueError("expected 64 lowercase hex characters")
    return key_hex
