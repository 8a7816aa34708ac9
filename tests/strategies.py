"""
Hypothesis strategies for KEZ documents: keys, sigchains and manifests
that are valid by construction, so properties can say "every valid thing
verifies" and "every damaged thing does not".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import strategies as st

from kezchat.identity.keys import KeyPair
from kezchat.manifests import (
    build_manifest,
    manifest_bytes,
    private_entry,
    public_entry,
)
from kezchat.sigchain import Event, bodies, next_event

keypairs = st.binary(min_size=32, max_size=32).map(KeyPair)

# Printable text without the characters the field checks refuse.
safe_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=24
)
file_names = safe_text.filter(lambda s: "/" not in s and "\\" not in s and s not in {".", ".."})
hex64 = st.binary(min_size=32, max_size=32).map(bytes.hex)
timestamps = st.builds(
    "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}Z".format,
    st.integers(2000, 2099),
    st.integers(1, 12),
    st.integers(1, 28),
    st.integers(0, 23),
    st.integers(0, 59),
    st.integers(0, 59),
)
sizes = st.integers(0, 2**53 - 1)
endpoint_ids = st.sampled_from(["nats-1", "iroh-laptop", "web", "ξ-phone"])


def add_endpoint_bodies() -> st.SearchStrategy[dict]:
    return st.one_of(
        st.builds(
            bodies.add_endpoint,
            endpoint_ids,
            st.just("nats"),
            url=safe_text,
            inbox=st.none() | safe_text,
        ),
        st.builds(bodies.add_endpoint, endpoint_ids, st.just("https"), url=safe_text),
        st.builds(bodies.add_endpoint, endpoint_ids, st.just("iroh"), node_id=hex64),
    )


claims = st.builds(
    lambda kind, value, proof: bodies.add_claim(f"{kind}:{value}", proof),
    st.sampled_from(["github", "nostr", "dns"]),
    safe_text,
    st.none() | safe_text,
)


@dataclass
class Chain:
    keypair: KeyPair
    events: list[Event] = field(default_factory=list)

    @property
    def primary(self) -> str:
        return self.keypair.primary


@st.composite
def chains(draw: st.DrawFn, max_events: int = 10) -> Chain:
    """
    A valid chain of random events, revokes naming revocable events only.
    """
    chain = Chain(draw(keypairs))
    revoked: set[int] = set()
    for _ in range(draw(st.integers(0, max_events))):
        revocable = [
            e["seq"] for e in chain.events if e["type"] != "revoke" and e["seq"] not in revoked
        ]
        kinds = ["add_endpoint", "remove_endpoint", "add_claim", "set_shared_files"]
        if revocable:
            kinds.append("revoke")
        kind = draw(st.sampled_from(kinds))
        if kind == "add_endpoint":
            body = draw(add_endpoint_bodies())
        elif kind == "remove_endpoint":
            body = bodies.remove_endpoint(draw(endpoint_ids))
        elif kind == "add_claim":
            body = draw(claims)
        elif kind == "set_shared_files":
            body = bodies.set_shared_files(draw(hex64), draw(sizes), draw(safe_text))
        else:
            target = draw(st.sampled_from(revocable))
            revoked.add(target)
            body = bodies.revoke(target)
        chain.events.append(
            next_event(chain.keypair, chain.events, kind, body, created_at=draw(timestamps))
        )
    return chain


@dataclass
class Published:
    """
    A signed manifest, its blob, and who may read what.
    """

    owner: KeyPair
    readers: list[KeyPair]
    manifest: dict
    blob: bytes
    content_keys: dict[str, bytes]


@st.composite
def manifests(draw: st.DrawFn, max_entries: int = 4) -> Published:
    owner = draw(keypairs)
    readers = draw(st.lists(keypairs, min_size=1, max_size=3, unique_by=lambda k: k.seed))
    entries, content_keys = [], {}
    for index in range(draw(st.integers(0, max_entries))):
        common = {
            "id": f"f{index}",
            "name": draw(file_names),
            "size": draw(sizes),
            "mime": draw(safe_text),
            "blake3": draw(hex64),
            "added_at": draw(timestamps),
        }
        key = draw(st.binary(min_size=32, max_size=32))
        if draw(st.booleans()):
            clear = draw(st.booleans())
            entries.append(public_entry(**common, content_key=key if clear else None))
            if clear:
                content_keys[common["id"]] = key
        else:
            chosen = draw(
                st.lists(st.sampled_from(readers), min_size=1, unique_by=lambda k: k.seed)
            )
            entries.append(
                private_entry(**common, content_key=key, recipients=[k.primary for k in chosen])
            )
            content_keys[common["id"]] = key
    manifest = build_manifest(owner, entries, created_at=draw(timestamps))
    return Published(owner, readers, manifest, manifest_bytes(manifest), content_keys)


@st.composite
def byte_flips(draw: st.DrawFn, data: bytes) -> tuple[int, bytes]:
    """
    Position and result of changing exactly one byte of C{data}.
    """
    index = draw(st.integers(0, len(data) - 1))
    new = draw(st.integers(0, 255).filter(lambda b: b != data[index]))
    return index, data[:index] + bytes([new]) + data[index + 1 :]
