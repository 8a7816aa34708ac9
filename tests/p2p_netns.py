"""
Two C{kez-chat} users share and fetch files peer to peer over Iroh,
against the real chat-server and sig-server (in this process, port 0).

Every test here starts Iroh endpoints, so it runs only inside a network
namespace with nothing but loopback: C{tests.test_p2p_cli} runs this
module in one (C{unshare --net}); on its own, outside one, it skips.
"""

from __future__ import annotations

import asyncio
import json
import os

from blake3 import blake3
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.utils import getProcessValue
from twisted.trial.unittest import SkipTest, TestCase

from kezchat.client.http import ChatClient
from kezchat.compat.aio import deferred_from_coroutine
from kezchat.e2e import file_share, seal_envelope
from kezchat.identity.keys import KeyPair
from kezchat.manifests.sealing import new_content_key, seal_content_key
from kezchat.p2p.crypt import CHUNK, FileEncryptor, ciphertext_digest
from kezchat.p2p.irohnode import IrohNode
from kezchat.p2p.transfer import SENDING, Download, FetchError, FileServer, Offer, fetch
from kezchat.p2p.transport import TransportError
from kezchat.testing.requirements import missing
from tests.clisupport import Cli, CliTestCase, Result, Running, assert_one_line_error
from tests.p2psupport import loopback_only, until
from tests.support import http_client, register, temp_dir

MiB = 1 << 20
#: the mount namespace of the process that started this module's namespace
OUTER_MOUNT_NS_ENV = "KEZ_TEST_OUTER_MOUNT_NS"


def _write_random(path: str, size: int) -> None:
    with open(path, "wb") as f:
        for start in range(0, size, MiB):
            f.write(os.urandom(min(MiB, size - start)))


def _digest(path: str) -> str:
    return blake3(max_threads=blake3.AUTO).update_mmap(path).hexdigest()


class _Base(CliTestCase):
    timeout = 90

    async def setUp(self) -> None:
        if not loopback_only():
            # Structural, not a missing tool: tests.test_p2p_cli re-runs this
            # module inside a loopback-only namespace, where it does run.
            raise SkipTest(
                "starts Iroh endpoints, which multicast: runs only in a loopback-only network"
                " namespace (tests.test_p2p_cli runs it in one)"
            )
        await self.start_servers()
        self.dir = temp_dir(self)

    def background(self, user: Cli, *args: str) -> Running:
        """
        Start C{user}'s command; it is stopped (if still running) when the
        test ends.
        """
        running = user.spawn(*args)

        def stop() -> Deferred[Result]:
            if not running.done.called:
                running.terminate()
            return running.done

        self.addCleanup(stop)
        return running

    def assertNothingAt(self, path: str) -> None:
        """
        No file at C{path}, and no partial download beside it.
        """
        self.assertFalse(os.path.lexists(path), f"{path} exists")
        name = os.path.basename(path)
        leftovers = [f for f in os.listdir(os.path.dirname(path)) if f.startswith(f".{name}.")]
        self.assertEqual(leftovers, [])


class ShareFetchTests(_Base):
    async def test_64_mib_intact(self) -> None:
        """
        A 64 MiB file goes from alice's CLI to bob's, intact; C{share}
        prints its line once the offer is sent and exits 0 once bob has
        the file; C{fetch --json} prints exactly its one line.
        """
        alice, bob = await self.registered("alice", "bob")
        source = os.path.join(self.dir, "big.bin")
        _write_random(source, 64 * MiB)
        sharing = self.background(alice, "share", "bob", source, "--json", "--timeout", "60")
        await sharing.wait_lines(1, timeout=60)
        offer = json.loads(sharing.protocol.out.decode().splitlines()[0])
        self.assertEqual(offer["size"], 64 * MiB)
        self.assertEqual(offer["name"], "big.bin")

        out = os.path.join(self.dir, "fetched.bin")
        fetched = await bob.run("fetch", offer["blake3"], "--out", out, "--json")
        self.assertEqual(fetched.code, 0, str(fetched))
        self.assertEqual(
            fetched.lines, [{"path": out, "size": 64 * MiB, "blake3": offer["blake3"]}]
        )
        self.assertNotIn("%|", fetched.err)  # no progress bar under --json
        shared = await sharing.done
        self.assertEqual(shared.code, 0, str(shared))
        self.assertEqual(len(shared.lines), 1)
        self.assertEqual(_digest(out), _digest(source))

    async def test_offline_sender(self) -> None:
        """
        While the sender is offline, C{fetch} says it is waiting for them
        and retries; once they serve again (same port, so the ticket still
        holds) the download completes, with a progress bar for a person.
        A sender that never comes back: C{fetch} gives up after --timeout
        with one line and exit 1, and leaves nothing.
        """
        alice, bob = await self.registered("alice", "bob")
        source = os.path.join(self.dir, "note.bin")
        _write_random(source, 3 * CHUNK + 11)
        shared = await alice.run("share", "bob", source, "--json", "--timeout", "1")
        self.assertEqual(shared.code, 1, str(shared))
        self.assertIn("has not fetched", shared.err)
        self.assertNotIn("Traceback", shared.err)
        digest = shared.lines[0]["blake3"]

        out = os.path.join(self.dir, "note-fetched.bin")
        fetching = self.background(bob, "fetch", digest, "--out", out, "--timeout", "60")
        waiting = "waiting for alice@kez.lat to come online"
        await until(lambda: waiting.encode() in fetching.protocol.err, 30, waiting)
        self.assertFalse(os.path.lexists(out))
        serving = self.background(alice, "serve", "--json", "--timeout", "60")
        fetched = await fetching.done
        self.assertEqual(fetched.code, 0, str(fetched))
        self.assertIn("100%", fetched.err)
        self.assertNotIn("Traceback", fetched.err)
        self.assertEqual(_digest(out), _digest(source))
        served = await serving.done
        self.assertEqual(served.code, 0, str(served))
        self.assertEqual(
            served.lines, [{"delivered": digest, "name": "note.bin", "to": "bob@kez.lat"}]
        )
        await self._never_online(alice, bob)

    async def _never_online(self, alice: Cli, bob: Cli) -> None:
        source = os.path.join(self.dir, "gone.bin")
        _write_random(source, 1000)
        shared = await alice.run("share", "bob", source, "--json", "--timeout", "1")
        digest = shared.lines[0]["blake3"]
        out = os.path.join(self.dir, "gone-fetched.bin")
        fetched = await bob.run("fetch", digest, "--out", out, "--timeout", "2", "--json")
        self.assertEqual(fetched.code, 1, str(fetched))
        self.assertIn("waiting for alice@kez.lat to come online", fetched.err)
        self.assertIn("did not come online within 2 s", fetched.err)
        self.assertEqual(fetched.out, "")
        self.assertNotIn("Traceback", fetched.err)
        self.assertNothingAt(out)


class HostileSenderTests(_Base):
    """
    A sender that does not follow the protocol honestly: its offer is
    signed and delivered like any other, but what it serves is damaged.
    """

    async def _offer(  # type: ignore[no-untyped-def]
        self, size: int, mutate, ticket: str | None = None
    ) -> tuple[str, str]:
        """
        Send bob an offer from the hostile alice, whose node serves
        C{mutate(ciphertext, key)}; returns the digest and the path fetched to.
        """
        source = os.path.join(self.dir, f"source-{len(self.offers)}.bin")
        _write_random(source, size)
        key = new_content_key()
        digest, _ = ciphertext_digest(source, key)
        pieces = []
        with FileEncryptor(source, key) as enc:
            while (piece := enc.next_piece()) is not None:
                pieces.append(piece)
        offered, served = mutate(digest, b"".join(pieces), key)
        self.offers[offered] = served
        plaintext = file_share(
            "evil.bin", size, offered, ticket or self.node.ticket(), seal_content_key(key, self.bob)
        )
        envelope = seal_envelope(self.alice, self.bob, plaintext)
        await self.client.send(self.alice, "alice", "bob", envelope)
        return offered, os.path.join(self.dir, f"out-{len(self.offers)}.bin")

    async def _serve(self) -> None:
        while (connection := await self.node.accept()) is not None:
            try:
                send, recv = await connection.accept_stream()
                wanted = (await recv.read_exact(32)).hex()
                await send.write(SENDING)
                await send.write(self.offers[wanted])
                await send.finish()
                await asyncio.wait_for(recv.read(1), 30)
            except (TransportError, TimeoutError):
                pass
            finally:
                connection.close(b"done")

    async def setUp(self) -> None:
        await super().setUp()
        (self.bob_cli,) = await self.registered("bob")
        self.bob = self.bob_cli.account["primary"]
        self.alice = KeyPair.generate()
        await register(http_client(self), self.chat.url, "alice", key=self.alice)
        self.client = ChatClient(self.chat.url, reactor)
        self.addCleanup(self.client.close)
        self.node = await deferred_from_coroutine(IrohNode.bind(self.alice.seed, "127.0.0.1:0"))
        self.addCleanup(lambda: deferred_from_coroutine(self.node.close()))
        self.offers: dict[str, bytes] = {}
        serving = asyncio.ensure_future(self._serve())
        self.addCleanup(serving.cancel)

    async def _refused(self, digest: str, out: str, why: str) -> None:
        fetched = await self.bob_cli.run("fetch", digest, "--out", out, "--json", "--timeout", "20")
        assert_one_line_error(self, fetched, 1, why)
        self.assertNothingAt(out)

    async def test_damaged_transfers(self) -> None:
        """
        Flipped bits, a stream cut short, bytes beyond the offer, and
        authentic pieces that are not the offered ciphertext: each fetch
        exits 1 with one line saying why, and leaves nothing at --out.
        """

        def flip(digest: str, stream: bytes, key: bytes) -> tuple[str, bytes]:
            damaged = bytearray(stream)
            damaged[CHUNK + 1000] ^= 0x01
            return digest, bytes(damaged)

        def cut(digest: str, stream: bytes, key: bytes) -> tuple[str, bytes]:
            return digest, stream[: len(stream) // 2]

        def extend(digest: str, stream: bytes, key: bytes) -> tuple[str, bytes]:
            return digest, stream + b"more"

        def other(digest: str, stream: bytes, key: bytes) -> tuple[str, bytes]:
            return "ab" * 32, stream

        cases = [
            (flip, 3 * CHUNK, "failed verification"),
            (cut, 3 * CHUNK, "cut short"),
            (extend, CHUNK + 5, "more than it offered"),
            (other, 2 * CHUNK, "BLAKE3"),
        ]
        for mutate, size, why in cases:
            digest, out = await self._offer(size, mutate)
            await self._refused(digest, out, why)
        digest, out = await self._offer(10, lambda d, s, k: (d, s), ticket="endpointgarbage")
        await self._refused(digest, out, "ticket is unusable")


class TransferProtocolTests(TestCase):
    """
    L{kezchat.p2p.transfer} between two nodes in this process: a sender
    serves an offer only to its recipient's node, and only what it offers.
    """

    timeout = 60

    async def setUp(self) -> None:
        if not loopback_only():
            # Structural: runs inside the namespace tests.test_p2p_cli makes.
            raise SkipTest("starts Iroh endpoints: only in a loopback-only network namespace")
        self.dir = temp_dir(self)
        self.source = os.path.join(self.dir, "file.bin")
        _write_random(self.source, CHUNK + 3)
        self.key = new_content_key()
        self.digest, self.size = ciphertext_digest(self.source, self.key)

    async def node(self) -> IrohNode:
        node = await deferred_from_coroutine(IrohNode.bind(os.urandom(32), "127.0.0.1:0"))
        self.addCleanup(lambda: deferred_from_coroutine(node.close()))
        return node

    async def _fetch(self, recipient: bytes | None, digest: str | None = None) -> str:
        sender, fetcher = await self.node(), await self.node()
        offer = Offer(self.digest, self.source, self.key, self.size, recipient or fetcher.node_id)
        server = FileServer(sender, {self.digest: offer}.get)
        server.start()
        self.addCleanup(lambda: deferred_from_coroutine(server.stop()))
        out = os.path.join(self.dir, "out.bin")
        download = Download(digest or self.digest, self.size, self.key, sender.ticket())
        await deferred_from_coroutine(fetch(fetcher, download, out, timeout=10))
        return out

    async def test_recipient(self) -> None:
        out = await self._fetch(None)
        self.assertEqual(_digest(out), _digest(self.source))

    async def test_not_for_this_node(self) -> None:
        with self.assertRaises(FetchError) as caught:
            await self._fetch(os.urandom(32))
        self.assertIn("someone else", str(caught.exception))
        self.assertEqual(os.listdir(self.dir), ["file.bin"])

    async def test_not_offered(self) -> None:
        with self.assertRaises(FetchError) as caught:
            await self._fetch(None, digest="cd" * 32)
        self.assertIn("no longer offers", str(caught.exception))
        self.assertEqual(os.listdir(self.dir), ["file.bin"])

    async def test_stalled_sender(self) -> None:
        """
        A sender that stops sending mid-file is given up on after the idle
        timeout: the fetch fails, nothing is left.
        """
        sender, fetcher = await self.node(), await self.node()

        async def stall() -> None:
            connection = await sender.accept()
            send, recv = await connection.accept_stream()
            await recv.read_exact(32)
            await send.write(SENDING + b"x" * 1000)
            await asyncio.sleep(30)

        stalling = asyncio.ensure_future(stall())
        self.addCleanup(stalling.cancel)
        out = os.path.join(self.dir, "out.bin")
        download = Download(self.digest, self.size, self.key, sender.ticket())
        with self.assertRaises(FetchError) as caught:
            await deferred_from_coroutine(
                fetch(fetcher, download, out, timeout=10, idle_timeout=0.5)
            )
        self.assertIn("silent", str(caught.exception))
        self.assertEqual(os.listdir(self.dir), ["file.bin"])

    async def test_disk_full(self) -> None:
        """
        The disk fills up mid-download: one clear failure, and the partial
        file is gone.  Needs a mount namespace of its own (C{unshare
        --mount}, as tests.test_p2p_cli starts this module) for a 1 MiB
        tmpfs.
        """
        outer = os.environ.get(OUTER_MOUNT_NS_ENV)
        if not outer or os.readlink("/proc/self/ns/mnt") == outer:
            # Structural: runs inside the mount namespace tests.test_p2p_cli makes.
            raise SkipTest("mounts a small tmpfs: only in a mount namespace of its own")
        small = os.path.join(self.dir, "small")
        os.mkdir(small)
        mounted = await getProcessValue("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", small])
        if mounted != 0:
            raise missing("cannot mount a tmpfs here")
        self.addCleanup(getProcessValue, "umount", [small])
        source = os.path.join(self.dir, "large.bin")
        _write_random(source, 8 * CHUNK)
        digest, size = ciphertext_digest(source, self.key)
        sender, fetcher = await self.node(), await self.node()
        offer = Offer(digest, source, self.key, size, fetcher.node_id)
        server = FileServer(sender, {digest: offer}.get)
        server.start()
        self.addCleanup(lambda: deferred_from_coroutine(server.stop()))
        download = Download(digest, size, self.key, sender.ticket())
        with self.assertRaises(FetchError) as caught:
            await deferred_from_coroutine(
                fetch(fetcher, download, os.path.join(small, "large.bin"), timeout=10)
            )
        self.assertIn("cannot write", str(caught.exception))
        self.assertEqual(os.listdir(small), [])
