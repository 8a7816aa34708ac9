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


def consumer_name(owner_hex: str) -> str:
    """
    The name of a user's durable JetStream consumer on L{STREAM}.
    """
    return f"inbox_{_check(owner_hex)}"


def consumer_filter(owner_hex: str) -> str:
    return f"{INBOX_ROOT}.{_check(owner_hex)}.>"


def reply_prefix(owner_hex: str) -> str:
    """
    The inbox prefix a user's client must use for request/reply
    (nats-py C{inbox_prefix}, nats.ws C{inboxPrefix}).
    """
    return f"_INBOX_{_check(owner_hex)}"


def user_permissions(owner_hex: str) -> dict[str, Any]:
    """
    The C{pub}/C{sub} sections of a user JWT for the key C{owner_hex}.

    Publish: any inbox, with the user's own key as sender; and exactly the
    JetStream API calls that manage and read the user's own durable
    consumer. The consumer is created through C{CONSUMER.CREATE.<stream>.
    <name>.<filter>}, a form in which nats-server checks that the filter in
    the request body equals the one in the subject, so a user cannot create
    their consumer over someone else's messages. The legacy
    C{CONSUMER.DURABLE.CREATE} form carries no filter and is not granted.

    Subscribe: the user's own inbox and their own reply subjects (where pull
    consumers deliver). A shared C{_INBOX.>} would expose everyone's
    replies, JetStream deliveries included, so it is never granted.
    """
    name = consumer_name(owner_hex)
    api = f"$JS.API.CONSUMER.%s.{STREAM}.{name}"
    return {
        "pub": {
            "allow": [
                f"{INBOX_ROOT}.*.{owner_hex}",
                f"$JS.API.CONSUMER.CREATE.{STREAM}.{name}.{consumer_filter(owner_hex)}",
                api % "INFO",
                api % "DELETE",
                f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{name}",
                f"$JS.ACK.{STREAM}.{name}.>",
            ]
        },
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
