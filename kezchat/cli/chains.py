"""
The CLI's use of sigchains: publishing the account's own endpoints, and
fetching and verifying another person's chain before pinning their key.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

from kezchat.cli.context import Context
from kezchat.cli.errors import CliError
from kezchat.client.errors import ServerError, Unreachable
from kezchat.identity.keys import KeyPair
from kezchat.protocol.subjects import INBOX_ROOT
from kezchat.sigchain import ChainError, ChainState, bodies, load_chain, next_event

NATS_ENV = "KEZ_CHAT_NATS_URL"
NATS_ENDPOINT_ID = "nats"
IROH_ENDPOINT_ID = "iroh"


def default_nats_url(server_domain: str) -> str:
    """
    The NATS URL advertised at registration when none is given:
    C{KEZ_CHAT_NATS_URL}, else the standard client port on the server's
    domain.
    """
    return os.environ.get(NATS_ENV) or f"nats://{server_domain.split(':')[0]}:4222"


def wanted_endpoints(keypair: KeyPair, nats_url: str) -> list[dict[str, Any]]:
    """
    The C{add_endpoint} bodies a CLI account publishes: its NATS inbox and
    its Iroh node, whose id is the ed25519 public key itself (the endpoint
    is built from the same seed).
    """
    return [
        bodies.add_endpoint(
            NATS_ENDPOINT_ID, "nats", url=nats_url, inbox=f"{INBOX_ROOT}.{keypair.public_hex}"
        ),
        bodies.add_endpoint(IROH_ENDPOINT_ID, "iroh", node_id=keypair.public_hex),
    ]


async def fetch_chain(ctx: Context, chain_url: str, primary: str) -> tuple[ChainState, list[Any]]:
    """
    Fetch and verify C{primary}'s chain.

    @raise CliError: the sig-server is unreachable or the chain is invalid.
    """
    try:
        events, _ = await ctx.sig().chain(chain_url)
    except Unreachable as e:
        raise CliError(f"{e}: the sig-server must be running to verify keys") from None
    except ServerError as e:
        raise CliError(f"the sig-server refused the chain request: {e.message}") from None
    try:
        return load_chain(primary, events), events
    except ChainError as e:
        raise CliError(
            f"the sigchain of {primary} does not verify ({e}): do not trust this key"
        ) from None


async def ensure_endpoints(
    ctx: Context, keypair: KeyPair, chain_url: str, nats_url: str
) -> ChainState:
    """
    Append whichever of L{wanted_endpoints} the chain does not carry yet.
    Safe to repeat: a half-done registration is completed by C{recover}.
    """
    state, events = await fetch_chain(ctx, chain_url, keypair.primary)
    for body in wanted_endpoints(keypair, nats_url):
        if state.endpoint(body["id"]) is not None:
            continue
        event = next_event(keypair, events, bodies.ADD_ENDPOINT, body)
        try:
            await ctx.sig().append(chain_url, event)
        except Unreachable as e:
            raise CliError(
                f"{e}: your endpoints are not published yet; run `kez-chat recover` later"
            ) from None
        except ServerError as e:
            raise CliError(
                f"the sig-server refused an event ({e.message}): try `kez-chat recover`"
            ) from None
        events.append(event)
        state = load_chain(keypair.primary, events)
    return state


def chain_summary(state: ChainState) -> dict[str, Any]:
    """
    What a contact entry keeps of a verified chain.
    """
    return {
        "chain_head": state.head_seq,
        "endpoints": [
            {k: v for k, v in asdict(e).items() if v is not None and k != "seq"}
            for e in state.endpoints
        ],
        "claims": [c.claim for c in state.claims],
    }
