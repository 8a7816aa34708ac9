"""
The files this client has offered peer to peer, kept in the home.

An offer outlives the C{share} that made it: the recipient may fetch
later, while C{kez-chat serve} (or another C{share}) runs.  So the offer
is saved — the file's path, the digest, who it is for, and its content
key sealed to our own key (only our seed opens it, so the home holds no
usable key in the clear) — and the node listens on the same port as last
time when it can, which keeps the tickets already sent valid.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kezchat.cli.home import Home, read_json, write_json
from kezchat.identity.keys import KeyPair, parse_primary
from kezchat.manifests.sealing import UnsealError, open_content_key, seal_content_key
from kezchat.p2p.transfer import Offer

#: how long an offer is served after it was made
OFFER_LIFETIME = 7 * 24 * 3600.0

FILE_NAME = "p2p-offers.json"


class OfferBook:
    """
    C{p2p-offers.json}: C{{"port": n, "offers": {blake3: record}}}.
    Blocking file I/O: call off the reactor thread.
    """

    def __init__(self, home: Home, clock: Any = time.time) -> None:
        self.home = home
        self._path = home.path(FILE_NAME)
        self._clock = clock

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self.home.ensure()
        fd = os.open(self.home.path(".p2p-offers.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        with os.fdopen(fd, "r+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                data = self._read()
                yield data
                write_json(self._path, data)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> dict[str, Any]:
        data = read_json(self._path, {})
        if not isinstance(data, dict):
            data = {}
        if not isinstance(data.get("offers"), dict):
            data["offers"] = {}
        return data

    def port(self) -> int:
        port = self._read().get("port")
        return port if isinstance(port, int) and 0 < port < 65536 else 0

    def set_port(self, port: int) -> None:
        with self._locked() as data:
            data["port"] = port

    def add(
        self, keypair: KeyPair, offer: Offer, name: str, to: str, recipient_primary: str
    ) -> None:
        with self._locked() as data:
            data["offers"][offer.blake3] = {
                "path": offer.path,
                "name": name,
                "size": offer.size,
                "to": to,
                "recipient": recipient_primary,
                "key": seal_content_key(offer.key, keypair.primary),
                "created_at": self._clock(),
                "delivered": False,
            }

    def mark_delivered(self, blake3: str) -> None:
        with self._locked() as data:
            record = data["offers"].get(blake3)
            if record is not None:
                record["delivered"] = True

    def live(self, keypair: KeyPair) -> dict[str, tuple[Offer, dict[str, Any]]]:
        """
        The offers still served: C{{blake3: (offer, record)}}; expired ones
        are forgotten.
        """
        now = self._clock()
        live: dict[str, tuple[Offer, dict[str, Any]]] = {}
        with self._locked() as data:
            for blake3, record in list(data["offers"].items()):
                try:
                    if now - float(record["created_at"]) > OFFER_LIFETIME:
                        raise ValueError("expired")
                    offer = Offer(
                        blake3=blake3,
                        path=record["path"],
                        key=open_content_key(record["key"], keypair),
                        size=int(record["size"]),
                        recipient=parse_primary(record["recipient"]),
                    )
                except (KeyError, TypeError, ValueError, UnsealError):
                    del data["offers"][blake3]
                    continue
                live[blake3] = (offer, record)
        return live
