"""
Test fixtures that start the real server on port 0 and talk HTTP to it.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, replace
from typing import Any

import treq
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from kezchat.identity.keys import KeyPair
from kezchat.protocol.registration import registration_payload, sign_registration
from kezchat.server.config import ChatConfig
from kezchat.server.service import ChatService, makeService
from kezchat.timeutil import format_rfc3339


def temp_dir(case: TestCase) -> str:
    path = tempfile.mkdtemp(prefix="kezchat-test-")

    def clean() -> None:
        for root, dirs, files in os.walk(path, topdown=False):
            for name in files:
                os.unlink(os.path.join(root, name))
            for name in dirs:
                os.rmdir(os.path.join(root, name))
        os.rmdir(path)

    case.addCleanup(clean)
    return path


async def fresh_database(case: TestCase) -> str:
    """
    The C{--db} setting of a new, empty database for C{case}: a SQLite
    file, or a PostgreSQL database when the case says
    C{db_backend = "postgresql"} (see L{tests.backends}).
    """
    if getattr(case, "db_backend", "sqlite") == "postgresql":
        from kezchat.testing.pgsupport import fresh_database as fresh_postgres

        return await fresh_postgres(case)
    return os.path.join(temp_dir(case), "kez-chat.db")


@dataclass
class RunningServer:
    service: ChatService
    url: str
    port: int

    @property
    def parts(self):
        return self.service.parts


async def start_server(
    case: TestCase, config: ChatConfig | None = None, **overrides: Any
) -> RunningServer:
    """
    Start a chat-server on 127.0.0.1 with an ephemeral port and a fresh
    database (of the case's backend); it stops when the test ends.
    """
    if config is None:
        config = ChatConfig(
            listen=("tcp:0:interface=127.0.0.1",),
            db=await fresh_database(case),
            register_limit=0,
            send_limit=0,
            # a test server never reaches out of loopback for a handle of
            # another domain (federation tests turn it on and --resolve)
            federation=False,
        )
    config = replace(config, **overrides)
    service = makeService(config, reactor)
    service.startService()
    case.addCleanup(service.stopService)
    ports = await service.when_listening()
    port = ports[0].getHost().port
    return RunningServer(service, f"http://127.0.0.1:{port}", port)


def http_client(case: TestCase, agent: Agent | None = None) -> HTTPClient:
    """
    A treq client that leaves no connection open when the test ends.
    """
    pool = HTTPConnectionPool(reactor, persistent=False)
    case.addCleanup(pool.closeCachedConnections)
    if agent is None:
        agent = Agent(reactor, pool=pool)
    return HTTPClient(agent)


async def json_of(response: Any) -> Any:
    return json.loads(await response.content())


def registration(
    key: KeyPair,
    handle: str,
    server: str = "kez.lat",
    created_at: float | None = None,
    **payload_overrides: Any,
) -> dict[str, Any]:
    """
    A signed registration body; C{payload_overrides} replace payload fields
    before signing (to build bodies the server must refuse).
    """
    when = format_rfc3339(time.time() if created_at is None else created_at)
    payload = registration_payload(key, handle, server, when)
    payload.update(payload_overrides)
    return sign_registration(key, payload)


async def register(
    client: HTTPClient, url: str, handle: str, key: KeyPair | None = None, server: str = "kez.lat"
) -> tuple[KeyPair, dict[str, Any]]:
    """
    Register C{handle} over HTTP; returns the key and the record.
    """
    key = key or KeyPair.generate()
    response = await client.post(f"{url}/v1/register", json=registration(key, handle, server))
    body = await json_of(response)
    if response.code != 201:
        raise AssertionError(f"registration of {handle} failed: {response.code} {body}")
    return key, body


def deferred_sleep(seconds: float) -> Deferred[None]:
    from twisted.internet.task import deferLater

    return deferLater(reactor, seconds, lambda: None)


__all__ = [
    "RunningServer",
    "deferred_sleep",
    "fresh_database",
    "http_client",
    "json_of",
    "register",
    "registration",
    "start_server",
    "temp_dir",
    "treq",
]
