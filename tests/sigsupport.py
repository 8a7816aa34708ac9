"""
Fixtures for the sig-server: start a real C{kezsig} on port 0, and draw
batches of examples from Hypothesis for tests that must then go over HTTP.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from kezchat.sigserver.config import SigConfig
from kezchat.sigserver.service import SigService, makeService
from tests.support import temp_dir

T = TypeVar("T")


@dataclass
class RunningSigServer:
    service: SigService
    url: str

    @property
    def parts(self):
        return self.service.parts

    def chain_url(self, key_hex: str) -> str:
        return f"{self.url}/v1/sigchains/ed25519/{key_hex}"


async def start_sig_server(case: TestCase, **overrides: Any) -> RunningSigServer:
    """
    Start kezsig on 127.0.0.1 with an ephemeral port and a fresh database;
    it stops when the test ends.
    """
    if getattr(case, "db_backend", "sqlite") == "postgresql":
        from kezchat.testing.pgsupport import fresh_database

        db = await fresh_database(case)
    else:
        db = os.path.join(temp_dir(case), "kez-sig.db")
    config = SigConfig(listen=("tcp:0:interface=127.0.0.1",), db=db, **overrides)
    service = makeService(config, reactor)
    service.startService()
    case.addCleanup(service.stopService)
    ports = await service.when_listening()
    return RunningSigServer(service, f"http://127.0.0.1:{ports[0].getHost().port}")


def examples(strategy: st.SearchStrategy[T], count: int) -> list[T]:
    """
    C{count} examples drawn by Hypothesis's own engine (edge cases first),
    for a test that cannot run inside C{@given} because it awaits HTTP.
    """
    drawn: list[T] = []

    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(value: T) -> None:
        drawn.append(value)

    collect()
    return drawn


# JSON values of any shape, for "wrong types" garbage.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
