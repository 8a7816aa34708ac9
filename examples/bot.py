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

It trusts neither the server nor a sender further than the envelope
proves (see `Trust` below): it verifies first, names each sender by the
key it pinned (never by what the server says), refuses replays and
plaintext with a repeated key, and prints a refused message as a warning
with the reason instead of dropping it. Before it pins a sender or
encrypts a reply, the server's key directory must prove the key is the
one registered under that handle (a signed head, consistent with the head
kept in the state file, and the registration's inclusion). Every HTTP
exchange has a deadline and a size bound, and text from the network is
printed with control and bidi characters escaped.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import http.client
import json
import os
import re
import sys
import time
import unicodedata
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
#: seconds one HTTP exchange may take in all, and the largest body read
HTTP_DEADLINE = 30.0
MAX_BODY = 1024 * 1024
#: the longest event-stream line read (an inbox item is at most ~260 KiB)
MAX_SSE_LINE = 320 * 1024
#: envelope signatures remembered to recognise replays
MAX_SEEN = 10_000
#: a qualified handle, the whole string: local part @ server name
HANDLE_RE = re.compile(
    r"[a-z0-9][a-z0-9_-]{2,31}@(?=.{1,253}\Z)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
    r"(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*(:[0-9]{1,5})?"
)


def strict_json(data: bytes | str) -> Any:
    """JSON that refuses a repeated key (which value would count?)."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in items]
        if len(set(keys)) != len(keys):
            raise ValueError("a key is repeated")
        return dict(items)

    return json.loads(data, object_pairs_hook=pairs)


def visible(text: object) -> str:
    """Text from the network, safe to print: controls and bidi escaped."""
    return "".join(
        c.encode("unicode_escape").decode("ascii")
        if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp", "Cs") and c != "\u200d"
        else c
        for c in str(text)
    )


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
    except EnvelopeError:
        raise
    except Exception as e:  # malformed fields, failed decryption
        raise EnvelopeError(f"cannot open: {e.__class__.__name__}") from None
    try:
        message = strict_json(plaintext)
    except ValueError as e:
        raise EnvelopeError(f"the plaintext is not acceptable JSON: {e}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise EnvelopeError("the plaintext is not a typed JSON object")
    return message


# -- the key directory (RFC 9162 Merkle log of registrations) ----------------


class KeyDirectoryError(Exception):
    """The server's key directory does not vouch for a key: do not encrypt to it."""


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_inclusion(index: int, size: int, leaf: bytes, path: list[bytes]) -> bytes:
    """RFC 9162 §2.1.3.2: the root C{path} leads to from the leaf hash at C{index}."""
    if not 0 <= index < size:
        raise KeyDirectoryError("leaf index outside the tree")
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            raise KeyDirectoryError("inclusion path too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise KeyDirectoryError("inclusion path too short")
    return r


def check_consistency(first: int, second: int, path: list[bytes], root1: bytes,
                      root2: bytes) -> None:
    """RFC 9162 §2.1.4.2, for 0 < first <= second."""
    if not 0 < first <= second:
        raise KeyDirectoryError("no consistency proof between these sizes")
    if first == second:
        if path or root1 != root2:
            raise KeyDirectoryError("two different trees of one size")
        return
    if not path:
        raise KeyDirectoryError("empty consistency proof")
    hashes = ([root1] if first & (first - 1) == 0 else []) + path
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = hashes[0]
    for c in hashes[1:]:
        if sn == 0:
            raise KeyDirectoryError("consistency proof too long")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0 or fr != root1 or sr != root2:
        raise KeyDirectoryError("the log was rewritten: the new head does not extend the old")


# -- HTTP --------------------------------------------------------------------


class APIError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code = status, code


def read_bounded(response: Any, deadline: float, limit: int = MAX_BODY) -> bytes:
    """
    A response body, refused past C{limit} bytes or after C{deadline}
    (a server trickling a byte every few seconds never trips a per-read
    timeout, so the whole exchange has one).
    """
    length = response.headers.get("Content-Length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise APIError(response.status, "too_large", f"the answer is over {limit} bytes")
    chunks, size = [], 0
    while True:
        if time.monotonic() > deadline:
            raise TimeoutError("the server did not finish its answer in time")
        chunk = response.read1(65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise APIError(response.status, "too_large", f"the answer is over {limit} bytes")
        chunks.append(chunk)


class Client:
    """The chat-server's HTTP API, for one identity and handle."""

    def __init__(
        self,
        base_url: str,
        identity: Identity,
        handle: str,
        domain: str = "kez.lat",
        *,
        kept_head: dict[str, Any] | None = None,
        keep_head: Any = lambda head: None,
    ) -> None:
        """
        @param domain: the home server's name, signed into every request
            (so another server never accepts it).
        @param kept_head: the newest key directory head verified before.
        @param keep_head: called with each newer verified head (to save it).
        """
        self.base_url = base_url.rstrip("/")
        self.me = identity
        self.handle = handle
        self.domain = domain
        self.kept_head = kept_head
        self.keep_head = keep_head

    def auth(self, method: str, path: str, *fields: str) -> str:
        """
        The X-KEZ-Auth value: <ts>:<sig over method\\n@domain\\npath\\nfields…\\nts>.
        The @domain line names the server the request is for, so another
        server never accepts it.
        """
        ts = str(int(time.time()))
        text = chr(10).join([method, f"@{self.domain}", path, *fields, ts])
        return f"{ts}:{self.me.sign(text.encode())}"

    def call(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
    ) -> tuple[int, Any]:
        request = urllib.request.Request(
            self.base_url + path, data=body, method=method, headers=headers or {}
        )
        if body is not None:
            request.add_header("Content-Type", "application/json")
        deadline = time.monotonic() + HTTP_DEADLINE
        try:
            with urllib.request.urlopen(request, timeout=HTTP_DEADLINE) as response:
                return response.status, json.loads(read_bounded(response, deadline))
        except urllib.error.HTTPError as e:
            try:
                error = json.loads(read_bounded(e, deadline)).get("error", {})
            except (ValueError, AttributeError, TimeoutError):
                error = {}
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
        return self.call("GET", "/v1/u/" + urllib.parse.quote(handle, safe="@"))[1]

    def log_head(self) -> dict[str, Any]:
        """
        The key directory's head: its signature checked under its own key,
        and (if we kept one) the same log key and a proof that it extends
        the head we kept. The newer one is kept.
        """
        head = self.call("GET", "/v1/log/head")[1]
        unsigned = {k: head.get(k) for k in ("size", "root", "ts", "key")}
        if set(head) != {*unsigned, "sig"} or not verify(head["key"], jcs(unsigned), head["sig"]):
            raise KeyDirectoryError("the key directory's head is not signed by its key")
        kept = self.kept_head
        if kept is not None:
            if kept["key"] != head["key"]:
                raise KeyDirectoryError("the key directory's signing key changed")
            old, new = sorted((kept, head), key=lambda h: h["size"])
            path: list[bytes] = []
            if 0 < old["size"] < new["size"]:
                query = urllib.parse.urlencode({"from": old["size"], "to": new["size"]})
                path = [bytes.fromhex(h) for h in
                        self.call("GET", "/v1/log/consistency?" + query)[1]["path"]]
            if old["size"] > 0:
                check_consistency(old["size"], new["size"], path, bytes.fromhex(old["root"]),
                                  bytes.fromhex(new["root"]))
        if kept is None or head["size"] > kept["size"]:
            self.kept_head = head
            self.keep_head(head)
        return head

    def vouched(self, to: str) -> dict[str, Any]:
        """
        C{to}'s record, once the key directory proves its key is the one
        registered under that handle (docs/protocol.md, "The key directory").
        """
        try:
            record = self.lookup(to)
            head = self.log_head()
            query = urllib.parse.urlencode({"handle": record["fqhn"], "size": head["size"]})
            proof = self.call("GET", "/v1/log/inclusion?" + query)[1]
            leaf = unb64url(proof["leaf"])
            registration = json.loads(leaf)
            payload = registration["payload"]
            if (
                rfc8785.dumps(registration) != leaf
                or proof["index"] != record.get("log_index")
                or f"{payload['handle'].partition('@')[0]}@{payload['server']}" != record["fqhn"]
                or payload["primary"] != record["primary"]
                or registration["signature"]["key"] != payload["primary"]
                or not verify(payload["primary"], jcs(payload), registration["signature"]["sig"])
            ):
                raise KeyDirectoryError(f"the key directory does not register {to} with this key")
            root = root_from_inclusion(proof["index"], head["size"], leaf_hash(leaf),
                                       [bytes.fromhex(h) for h in proof["path"]])
            included = root == bytes.fromhex(head["root"])
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as e:
            # a hostile server's malformed answer refuses the key, never stops the bot
            raise KeyDirectoryError(f"the key directory's answer about {to} is malformed") from e
        if not included:
            raise KeyDirectoryError(f"{to}'s key is not in the key directory")
        return record

    def send(self, to: str, plaintext: dict[str, Any]) -> int:
        """Encrypt C{plaintext} for C{to}'s key (vouched for by the key directory) and send it."""
        recipient = self.vouched(to)
        # our newest verified head rides along, so the recipient can tell
        # whether the server shows us both the same key directory
        if self.kept_head is not None:
            plaintext = {**plaintext, "head": {k: self.kept_head[k] for k in ("size", "root")}}
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
                    try:
                        body = read_bounded(response, time.monotonic() + HTTP_DEADLINE)
                        error = json.loads(body).get("error", {})
                    except (ValueError, AttributeError, TimeoutError):
                        error = {}
                    code, message = error.get("code", "?"), error.get("message", "")
                    raise APIError(response.status, code, message)
                for event in sse_events(response):
                    if "retry" in event and event["retry"].isdigit():
                        retry = min(int(event["retry"]) / 1000, 60.0)
                    if event.get("event") == "message":
                        try:
                            item = json.loads(event["data"])
                            seq = item["seq"]
                        except (ValueError, KeyError, TypeError):
                            warn("the server sent an unreadable event; skipped")
                            continue
                        if isinstance(seq, int) and seq > last_seq:
                            last_seq = seq
                        yield item
            except APIError as e:
                if e.status < 500 and e.status != 429:
                    raise
            except SSELineTooLong as e:
                warn(f"{e}: dropped the stream; reconnecting")
            except (OSError, http.client.HTTPException):
                pass  # dropped (e.g. cut as a slow consumer): reconnect and resume
            finally:
                connection.close()
            time.sleep(retry)


class SSELineTooLong(Exception):
    pass


def sse_events(response: http.client.HTTPResponse) -> Iterator[dict[str, str]]:
    """Events of a text/event-stream: dicts of their fields (data lines joined)."""
    event: dict[str, str] = {}
    while True:
        raw = response.readline(MAX_SSE_LINE + 1)
        if not raw:
            return
        if len(raw) > MAX_SSE_LINE:
            raise SSELineTooLong(f"an event-stream line over {MAX_SSE_LINE} bytes")
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
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
            if len(event["data"]) + len(value) > MAX_SSE_LINE:
                raise SSELineTooLong(f"an event over {MAX_SSE_LINE} bytes")
            event["data"] += "\n" + value
        elif name == "retry":
            yield {"retry": value}
        else:
            event[name] = value


# -- trust -------------------------------------------------------------------


def warn(text: str) -> None:
    sys.stderr.write(f"bot: warning: {visible(text)}\n")
    sys.stderr.flush()


def _moment(text: Any) -> datetime.datetime | None:
    try:
        moment = datetime.datetime.fromisoformat(str(text).upper().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def clamped_ts(ts: Any, created_at: Any) -> Any:
    """
    The sender's ts, but never later than when the server stored the
    message (a ts in the year 9999 does not keep a message last).
    """
    sent, stored = _moment(ts), _moment(created_at)
    if sent is None or (stored is not None and sent > stored):
        return created_at
    return ts


class Trust:
    """
    What the bot believes about senders, kept in the state file: C{pins}
    (handle → key, trust on first use) and C{seen} (the newest envelope
    signatures, to recognise a replay).

    An item from the server is a claim; L{check} accepts a message only
    when the envelope verifies first and then every claim around it
    agrees with it: the server's C{from_primary} is the signing key, its
    C{from} is a handle, and the pins agree both ways (that handle is
    pinned to that key, and that key to that handle). A sender seen for
    the first time is pinned only when the registry names the signing
    key for the handle and the key directory proves that registration
    (L{Client.vouched}). The name printed is always the pinned handle.
    """

    def __init__(self, state: dict[str, Any], client: Client) -> None:
        self.pins: dict[str, str] = state.setdefault("pins", {})
        self.seen: list[str] = state.setdefault("seen", [])
        self.client = client

    def handle_of(self, primary: str) -> str | None:
        return next((h for h, p in self.pins.items() if p == primary), None)

    def is_replay(self, envelope: Any) -> bool:
        sig = envelope.get("sig") if isinstance(envelope, dict) else None
        if not isinstance(sig, str):
            return False
        if sig in self.seen:
            return True
        self.seen.append(sig)
        del self.seen[:-MAX_SEEN]
        return False

    def check(
        self, me: Identity, item: dict[str, Any]
    ) -> tuple[str | None, dict[str, Any] | None, str | None]:
        """(the pinned handle or None, the plaintext or None, why it is refused or None)."""
        envelope = item.get("envelope")
        try:
            message = open_envelope(me, envelope)  # verify first
        except (EnvelopeError, AttributeError) as e:
            key = envelope.get("from") if isinstance(envelope, dict) else None
            label = self.handle_of(key) if isinstance(key, str) else None
            return label, None, str(e) or "not an envelope"
        signer = envelope["from"]
        label = self.handle_of(signer)
        claimed = item.get("from")
        if item.get("from_primary") != signer:
            return label, message, "the envelope's signer is not the key the server vouched for"
        if not isinstance(claimed, str) or not HANDLE_RE.fullmatch(claimed):
            return label, message, f"the server labels the sender {claimed!r}, not a handle"
        pinned = self.pins.get(claimed)
        if pinned is not None and pinned != signer:
            return label, message, f"key changed: {claimed} is pinned to another key"
        if label is not None and label != claimed:
            return label, message, f"the server says {claimed} sent it; the key is {label}'s"
        if label is None:
            try:
                # the registry's answer, proven by the key directory
                record = self.client.vouched(claimed)
            except KeyDirectoryError as e:
                return None, message, f"KEY DIRECTORY CHECK FAILED for {claimed}: {e}"
            except (APIError, OSError, ValueError) as e:
                return None, message, f"cannot confirm the sender {claimed}: {e}"
            if record.get("fqhn") != claimed or record.get("primary") != signer:
                return None, message, f"the registry names another key for {claimed}"
            self.pins[claimed] = signer
            label = claimed
        return label, message, None


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

    def keep_head(head: dict[str, Any]) -> None:
        state["head"] = head
        save_state(args.state, state)

    client = Client(
        args.server_url, me, args.handle, args.domain,
        kept_head=state.get("head"), keep_head=keep_head,
    )
    trust = Trust(state, client)
    record = client.register(args.domain)
    print(json.dumps({"ready": record["fqhn"], "primary": me.primary}), flush=True)

    handled = 0
    for item in client.stream(state["last_seq"]):
        seq = item["seq"]
        if item.get("direction") == "out":
            # the server's copy of an echo we sent: nothing to answer (and
            # one not even from our key is said, never silently dropped)
            envelope = item.get("envelope")
            if not isinstance(envelope, dict) or envelope.get("from") != me.primary:
                warn(f"message #{seq} is labelled our own sent copy but is not from our key")
            state["last_seq"] = max(state["last_seq"], seq)
            save_state(args.state, state)
            continue
        if trust.is_replay(item.get("envelope")):
            warn(f"message #{seq} is a replay of an earlier envelope: not shown again")
        else:
            handled += 1
            sender, message, refused = trust.check(me, item)
            envelope = item.get("envelope")
            ts = clamped_ts(
                envelope.get("ts") if isinstance(envelope, dict) else None, item.get("created_at")
            )
            if refused is None and message is not None:
                line = {"seq": seq, "from": sender, "ts": ts, "verified": True, **message}
                human = f"{visible(sender)}: {visible(message)}"
            else:
                line = {"seq": seq, "from": sender, "verified": False,
                        "type": "unreadable", "error": refused}
                human = f"[UNVERIFIED] {visible(sender or '?')}: {visible(refused)}"
                warn(f"message #{seq} from {sender or 'an unknown sender'} is refused: {refused}")
            print(json.dumps(line) if args.json else human, flush=True)
            if refused is None and message and message.get("type") == "text" and sender:
                try:
                    client.send(sender, {"type": "text", "text": "echo: " + str(message["text"])})
                except KeyDirectoryError as e:
                    warn(f"not answering {sender}: {e}")
                    print(json.dumps({"refused": sender, "warning": str(e)}) if args.json
                          else f"NOT ANSWERING {visible(sender)}: {visible(str(e))}", flush=True)
        state["last_seq"] = max(state["last_seq"], seq)
        save_state(args.state, state)
        if args.count is not None and handled >= args.count:
            return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
