#!/usr/bin/env python3
"""
A minimal KEZ chat client: an echo bot. Copy this file to start your own.

It uses only PyNaCl, cryptography, rfc8785 and the standard library (no
kezchat import), so it doubles as a reference for client authors in other
languages; docs/protocol.md describes every step.

    pip install pynacl cryptography rfc8785
    python bot.py --server-url http://127.0.0.1:6969 --handle echobot --state echobot.json

On first run it creates a key (kept in the state file: guard it, it *is*
the account), registers the handle, then listens on its inbox over
server-sent events, decrypts each message, and answers text messages with
"echo: <text>". It resumes after the last message it handled, across
reconnects and restarts. `--json` prints one JSON line per message.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import nacl.bindings
import nacl.exceptions
import nacl.signing
import rfc8785
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ENVELOPE_INFO = b"kez-chat-msg-v1"


# -- identity ---------------------------------------------------------------


def jcs(value: Any) -> bytes:
    """RFC 8785 canonical JSON: what every KEZ signature covers."""
    return rfc8785.dumps(value)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Identity:
    """An ed25519 key pair from its 32-byte seed, and its X25519 twin."""

    def __init__(self, seed: bytes) -> None:
        self.seed = seed
        self.signing = nacl.signing.SigningKey(seed)
        self.public = bytes(self.signing.verify_key)
        self.primary = "ed25519:" + self.public.hex()
        # libsodium's Montgomery conversion (crypto_sign_ed25519_sk_to_curve25519)
        self.x25519_private = nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(
            seed + self.public
        )

    def sign(self, message: bytes) -> str:
        return self.signing.sign(message).signature.hex()


def public_of(primary: str) -> bytes:
    if not primary.startswith("ed25519:") or len(primary) != 72:
        raise ValueError(f"not an ed25519 primary: {primary!r}")
    return bytes.fromhex(primary[8:])


def verify(primary: str, message: bytes, signature_hex: str) -> bool:
    try:
        nacl.signing.VerifyKey(public_of(primary)).verify(message, bytes.fromhex(signature_hex))
        return True
    except (ValueError, nacl.exceptions.BadSignatureError):
        return False


# -- the end-to-end envelope -------------------------------------------------


def _key_and_nonce(shared: bytes, salt: bytes) -> tuple[bytes, bytes]:
    okm = HKDF(algorithm=hashes.SHA256(), length=44, salt=salt, info=ENVELOPE_INFO).derive(shared)
    return okm[:32], okm[32:]


def rfc3339_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def seal(
    sender: Identity,
    recipient_primary: str,
    plaintext: dict[str, Any],
    ts: str | None = None,
    salt: bytes | None = None,
) -> dict[str, Any]:
    """Encrypt and sign C{plaintext} for C{recipient_primary}."""
    recipient_x = nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(public_of(recipient_primary))
    shared = nacl.bindings.crypto_scalarmult(sender.x25519_private, recipient_x)
    salt = os.urandom(16) if salt is None else salt
    key, nonce = _key_and_nonce(shared, salt)
    header = {"v": 1, "from": sender.primary, "to": recipient_primary, "ts": ts or rfc3339_now()}
    ct = ChaCha20Poly1305(key).encrypt(nonce, jcs(plaintext), jcs(header))
    envelope = {**header, "salt": b64url(salt), "ct": b64url(ct)}
    envelope["sig"] = sender.sign(jcs(envelope))
    return envelope


class EnvelopeError(Exception):
    pass


def open_envelope(recipient: Identity, envelope: dict[str, Any]) -> dict[str, Any]:
    """
    Verify and decrypt an envelope addressed to C{recipient}. The caller
    still checks that C{envelope["from"]} is the key it knows for the sender.
    """
    try:
        if envelope.get("v") != 1 or envelope.get("to") != recipient.primary:
            raise EnvelopeError("not a v1 envelope for this key")
        unsigned = {k: v for k, v in envelope.items() if k != "sig"}
        if not verify(envelope["from"], jcs(unsigned), envelope["sig"]):
            raise EnvelopeError("bad signature")
        sender_x = nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(public_of(envelope["from"]))
        shared = nacl.bindings.crypto_scalarmult(recipient.x25519_private, sender_x)
        key, nonce = _key_and_nonce(shared, unb64url(envelope["salt"]))
        header = {k: envelope[k] for k in ("v", "from", "to", "ts")}
        plaintext = ChaCha20Poly1305(key).decrypt(nonce, unb64url(envelope["ct"]), jcs(header))
        return json.loads(plaintext)
    except EnvelopeError:
        raise
    except Exception as e:  # malformed fields, failed decryption
        raise EnvelopeError(f"cannot open: {e.__class__.__name__}") from None


# -- HTTP --------------------------------------------------------------------


class APIError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code = status, code


class Client:
    """The chat-server's HTTP API, for one identity and handle."""

    def __init__(self, base_url: str, identity: Identity, handle: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.me = identity
        self.handle = handle

    def auth(self, method: str, path: str, *fields: str) -> str:
        """The X-KEZ-Auth value: <ts>:<sig over method\\npath\\nfields…\\nts>."""
        ts = str(int(time.time()))
        return f"{ts}:{self.me.sign(chr(10).join([method, path, *fields, ts]).encode())}"

    def call(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
    ) -> tuple[int, Any]:
        request = urllib.request.Request(
            self.base_url + path, data=body, method=method, headers=headers or {}
        )
        if body is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            error = json.loads(e.read()).get("error", {})
            raise APIError(e.code, error.get("code", "?"), error.get("message", "")) from None

    def register(self, server: str) -> dict[str, Any]:
        """Register our handle for our key; already ours is fine."""
        payload = {
            "type": "kez.chat.handle_registration", "version": 1, "handle": self.handle,
            "primary": self.me.primary, "server": server, "created_at": rfc3339_now(),
        }
        body = {
            "kez": "handle_registration", "payload": payload,
            "signature": {"alg": "ed25519-sha512-jcs", "key": self.me.primary,
                          "sig": self.me.sign(jcs(payload))},
        }
        try:
            return self.call("POST", "/v1/register", json.dumps(body).encode())[1]
        except APIError as e:
            if e.code not in ("handle_taken", "primary_taken"):
                raise
            record = self.lookup(self.handle)
            if record["primary"] == self.me.primary:
                return record
            raise

    def lookup(self, handle: str) -> dict[str, Any]:
        return self.call("GET", "/v1/u/" + urllib.parse.quote(handle))[1]

    def send(self, to: str, plaintext: dict[str, Any]) -> int:
        """Encrypt C{plaintext} for C{to}'s registered key and send it."""
        recipient = self.lookup(to)
        envelope = seal(self.me, recipient["primary"], plaintext)
        # the same idempotency key on a retry: the message is stored once
        body = json.dumps(
            {"to": to, "envelope": envelope, "idempotency_key": uuid.uuid4().hex}
        ).encode()
        headers = {
            "X-KEZ-Sender": self.handle,
            "X-KEZ-Auth": self.auth("POST", "/v1/messages", hashlib.sha256(body).hexdigest()),
        }
        for attempt in range(3):
            try:
                return self.call("POST", "/v1/messages", body, headers)[1]["seq"]
            except (urllib.error.URLError, TimeoutError):
                if attempt == 2:
                    raise
                time.sleep(1)
        raise AssertionError("unreachable")

    def stream(self, last_seq: int) -> Iterator[dict[str, Any]]:
        """
        Inbox items after C{last_seq}, forever: server-sent events with
        resume. Each (re)connection signs a fresh C{auth} (it is valid for
        60 s) and sends C{Last-Event-ID}, so nothing is lost or repeated.
        """
        url = urllib.parse.urlsplit(self.base_url)
        path = f"/v1/inbox/{self.handle}/stream"
        retry = 3.0
        while True:
            connection_class = (
                http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
            )
            # pings come every 15 s: silence for 45 s means a dead connection
            connection = connection_class(url.netloc, timeout=45)
            try:
                # the signed path is the API path, whatever prefix the server is mounted under
                query = urllib.parse.urlencode({"auth": self.auth("GET", path)})
                connection.request(
                    "GET", f"{url.path.rstrip('/')}{path}?{query}",
                    headers={"Accept": "text/event-stream", "Last-Event-ID": str(last_seq)},
                )
                response = connection.getresponse()
                if response.status != 200:
                    error = json.loads(response.read()).get("error", {})
                    code, message = error.get("code", "?"), error.get("message", "")
                    raise APIError(response.status, code, message)
                for event in sse_events(response):
                    if "retry" in event:
                        retry = int(event["retry"]) / 1000
                    if event.get("event") == "message":
                        item = json.loads(event["data"])
                        last_seq = item["seq"]
                        yield item
            except APIError as e:
                if e.status < 500 and e.status != 429:
                    raise
            except (OSError, http.client.HTTPException):
                pass  # dropped (e.g. cut as a slow consumer): reconnect and resume
            finally:
                connection.close()
            time.sleep(retry)


def sse_events(response: http.client.HTTPResponse) -> Iterator[dict[str, str]]:
    """Events of a text/event-stream: dicts of their fields (data lines joined)."""
    event: dict[str, str] = {}
    while True:
        raw = response.readline()
        if not raw:
            return
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if event:
                yield event
            event = {}
            continue
        if line.startswith(":"):
            continue  # a comment: ": ping"
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data" and "data" in event:
            event["data"] += "\n" + value
        elif name == "retry":
            yield {"retry": value}
        else:
            event[name] = value


# -- the bot -----------------------------------------------------------------


def load_state(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        state = {"seed": os.urandom(32).hex(), "last_seq": 0}
        save_state(path, state)
        return state


def save_state(path: str, state: dict[str, Any]) -> None:
    tmp = path + ".tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        json.dump(state, f)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A KEZ chat echo bot.")
    parser.add_argument("--server-url", default="http://127.0.0.1:6969")
    parser.add_argument("--domain", default="kez.lat", help="the home server's domain")
    parser.add_argument("--handle", required=True)
    parser.add_argument("--state", required=True, help="file keeping the seed and the cursor")
    parser.add_argument("--count", type=int, help="exit after this many messages")
    parser.add_argument("--json", action="store_true", help="one JSON line per message")
    args = parser.parse_args(argv)

    state = load_state(args.state)
    me = Identity(bytes.fromhex(state["seed"]))
    client = Client(args.server_url, me, args.handle)
    record = client.register(args.domain)
    print(json.dumps({"ready": record["fqhn"], "primary": me.primary}), flush=True)

    handled = 0
    for item in client.stream(state["last_seq"]):
        if item.get("direction") == "out":
            # the server's copy of an echo we sent: nothing to answer
            state["last_seq"] = item["seq"]
            save_state(args.state, state)
            continue
        handled += 1
        envelope = item["envelope"]
        try:
            # the key the server vouches for must be the one that signed
            if envelope.get("from") != item["from_primary"]:
                raise EnvelopeError("envelope signer is not the sender's key")
            message = open_envelope(me, envelope)
            verified = True
        except EnvelopeError as e:
            message, verified = {"type": "unreadable", "error": str(e)}, False
        line = {"seq": item["seq"], "from": item["from"], "verified": verified, **message}
        print(json.dumps(line) if args.json else f"{item['from']}: {message}", flush=True)
        if verified and message.get("type") == "text":
            client.send(item["from"], {"type": "text", "text": "echo: " + message["text"]})
        state["last_seq"] = item["seq"]
        save_state(args.state, state)
        if args.count is not None and handled >= args.count:
            return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
