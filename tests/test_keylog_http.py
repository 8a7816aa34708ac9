"""
The key directory over real HTTP, on SQLite and PostgreSQL.

Every root and proof the server gives is checked by the RFC 9162
definitions written out in L{tests.test_keylog_merkle} (an oracle
independent of the server's stored-subtree code), over the leaves the
server lists, which must be the registrations exactly as posted.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.trial.unittest import TestCase

from kezchat.compat.aio import deferred_from_coroutine
from kezchat.identity.jcs import canonical_json
from kezchat.identity.keys import KeyPair
from kezchat.keylog import merkle
from kezchat.keylog.wire import parse_head
from kezchat.storage.sqlite.keylog import NODE_SQL
from kezchat.storage.sqlite.schema import upgrade
from tests.backends import on_postgresql
from tests.support import http_client, json_of, register, registration, start_server
from tests.test_bad_input import BadInputTestCase, assert_spec_error, barrage_settings
from tests.test_keylog_merkle import mth, path, subproof


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LogClient:
    def __init__(self, case: TestCase, url: str) -> None:
        self.client = http_client(case)
        self.url = url

    async def get(self, path: str, **params: object) -> tuple[int, dict]:
        response = await self.client.get(
            self.url + path, params={k: str(v) for k, v in params.items()}
        )
        return response.code, await json_of(response)

    async def ok(self, path: str, **params: object) -> dict:
        code, body = await self.get(path, **params)
        assert code == 200, (path, params, code, body)
        return body

    async def head(self) -> dict:
        return await self.ok("/v1/log/head")

    async def leaves(self) -> list[bytes]:
        size = (await self.head())["size"]
        out: list[bytes] = []
        while len(out) < size:
            page = await self.ok("/v1/log/entries", start=len(out), count=1000)
            out += [unb64(e) for e in page["entries"]]
        return out


class KeyLogTests(TestCase):
    timeout = 60

    async def setUp(self) -> None:
        self.server = await start_server(self)
        self.http = http_client(self)
        self.log = LogClient(self, self.server.url)

    async def test_empty_log(self) -> None:
        head = await self.log.head()
        self.assertEqual((head["size"], head["root"]), (0, merkle.EMPTY_ROOT.hex()))
        parse_head(head)

    async def test_leaves_are_the_registrations_as_posted(self) -> None:
        """
        Each registration becomes one leaf, the JCS bytes of the body as
        posted; records carry its index; the signed head's root is RFC
        9162's hash of the leaves.
        """
        bodies, records = [], []
        for n, handle in enumerate(["alice", "bob", "carol", "dave", "erin"]):
            key = KeyPair.generate()
            body = registration(key, handle)
            response = await self.http.post(f"{self.server.url}/v1/register", json=body)
            record = await json_of(response)
            self.assertEqual(response.code, 201, record)
            self.assertEqual(record["log_index"], n)
            for lookup in (f"/v1/u/{handle}", f"/v1/by-primary/{key.primary}"):
                self.assertEqual(await self.log.ok(lookup), record)
            bodies.append(body)
            records.append(record)
        leaves = await self.log.leaves()
        self.assertEqual(leaves, [canonical_json(b) for b in bodies])
        head = parse_head(await self.log.head())
        self.assertEqual((head.size, head.root), (5, mth(leaves)))

    async def test_proofs_are_rfc9162(self) -> None:
        """
        Every inclusion proof at every size and every consistency proof
        between every pair of sizes is exactly RFC 9162's, and verifies.
        """
        handles = [f"user{n}" for n in range(9)]
        for handle in handles:
            await register(self.http, self.server.url, handle)
        leaves = await self.log.leaves()
        for index, handle in enumerate(handles):
            for size in range(index + 1, len(handles) + 1):
                proof = await self.log.ok("/v1/log/inclusion", handle=handle, size=size)
                self.assertEqual(
                    (proof["index"], proof["size"], unb64(proof["leaf"])),
                    (index, size, leaves[index]),
                )
                hashes = [bytes.fromhex(h) for h in proof["path"]]
                self.assertEqual(hashes, path(index, leaves[:size]))
                merkle.verify_inclusion(
                    index, size, merkle.leaf_hash(leaves[index]), hashes, mth(leaves[:size])
                )
        for first in range(1, len(handles) + 1):
            for second in range(first, len(handles) + 1):
                proof = await self.log.ok("/v1/log/consistency", **{"from": first, "to": second})
                hashes = [bytes.fromhex(h) for h in proof["path"]]
                self.assertEqual(
                    hashes, subproof(first, leaves[:second], True) if first < second else []
                )
                merkle.verify_consistency(
                    first, second, hashes, mth(leaves[:first]), mth(leaves[:second])
                )

    async def test_lookup_forms(self) -> None:
        await register(self.http, self.server.url, "mixed")
        for handle in ("mixed", "MIXED@kez.lat", "mixed@KEZ.LAT"):
            proof = await self.log.ok("/v1/log/inclusion", handle=handle, size=1)
            self.assertEqual(proof["index"], 0)

    async def test_errors(self) -> None:
        await register(self.http, self.server.url, "alice")
        await register(self.http, self.server.url, "bob")
        refused = [
            ("/v1/log/inclusion", {"handle": "nobody", "size": 2}, 404, "not_found"),
            ("/v1/log/inclusion", {"handle": "alice@other.example", "size": 2}, 404,
             "not_found"),
            ("/v1/log/inclusion", {"handle": "bob", "size": 1}, 400, "bad_request"),
            ("/v1/log/inclusion", {"handle": "alice", "size": 3}, 400, "bad_request"),
            ("/v1/log/inclusion", {"handle": "alice", "size": 0}, 400, "bad_request"),
            ("/v1/log/inclusion", {"handle": "alice"}, 400, "bad_request"),
            ("/v1/log/inclusion", {"size": 1}, 400, "bad_request"),
            ("/v1/log/inclusion", {"handle": "alice", "size": -1}, 400, "bad_request"),
            ("/v1/log/inclusion", {"handle": "alice", "size": "1.0"}, 400, "bad_request"),
            ("/v1/log/inclusion", {"handle": "a!b", "size": 1}, 400, "invalid_handle"),
            ("/v1/log/consistency", {"from": 0, "to": 2}, 400, "bad_request"),
            ("/v1/log/consistency", {"from": 2, "to": 1}, 400, "bad_request"),
            ("/v1/log/consistency", {"from": 1, "to": 3}, 400, "bad_request"),
            ("/v1/log/consistency", {"from": 1}, 400, "bad_request"),
            ("/v1/log/consistency", {"from": "x", "to": 2}, 400, "bad_request"),
            ("/v1/log/entries", {"start": 0, "count": 0}, 400, "bad_request"),
            ("/v1/log/entries", {"start": 0, "count": 1001}, 400, "bad_request"),
            ("/v1/log/entries", {"start": 3, "count": 1}, 400, "bad_request"),
            ("/v1/log/entries", {"start": 0}, 400, "bad_request"),
            ("/v1/log/entries", {"start": 10**30, "count": 1}, 400, "bad_request"),
        ]
        for route, params, status, code in refused:
            got_status, body = await self.log.get(route, **params)
            self.assertEqual((got_status, body["error"]["code"]), (status, code),
                             (route, params, body))
        # the end of the log is an empty page, not an error
        self.assertEqual(await self.log.ok("/v1/log/entries", start=2, count=5), {"entries": []})
        self.assertEqual(len((await self.log.ok("/v1/log/entries", start=1, count=1000))
                             ["entries"]), 1)

    async def test_refused_registration_adds_no_leaf(self) -> None:
        key, _ = await register(self.http, self.server.url, "alice")
        for body in (registration(KeyPair.generate(), "alice"), registration(key, "alice2")):
            response = await self.http.post(f"{self.server.url}/v1/register", json=body)
            self.assertEqual(response.code, 409)
        self.assertEqual((await self.log.head())["size"], 1)
        _, record = await register(self.http, self.server.url, "carol")
        self.assertEqual(record["log_index"], 1)

    async def test_head_cached_until_the_log_grows(self) -> None:
        await register(self.http, self.server.url, "alice")
        first = await self.log.head()
        self.assertEqual(await self.log.head(), first)
        await register(self.http, self.server.url, "bob")
        second = parse_head(await self.log.head())
        self.assertEqual(second.size, 2)
        self.assertEqual(second.key, first["key"])

    async def test_concurrent_registrations_make_one_log(self) -> None:
        """
        Registrations racing (including two for one handle) give dense
        indexes, one leaf per handle stored, and a root over exactly those.
        """
        handles = [f"racer{n}" for n in range(24)] + ["racer0", "racer1"]
        results = await gatherResults([
            self.http.post(f"{self.server.url}/v1/register",
                           json=registration(KeyPair.generate(), h))
            for h in handles
        ])
        bodies = [await json_of(r) for r in results]
        codes = sorted(r.code for r in results)
        self.assertEqual(codes, [201] * 24 + [409] * 2)
        indexes = sorted(b["log_index"] for b in bodies if "log_index" in b)
        self.assertEqual(indexes, list(range(24)))
        leaves = await self.log.leaves()
        self.assertEqual(len(leaves), 24)
        self.assertEqual(sorted(json.loads(leaf)["payload"]["handle"] for leaf in leaves),
                         sorted(set(handles)))
        head = parse_head(await self.log.head())
        self.assertEqual(head.root, mth(leaves))

    async def test_two_instances_one_log(self) -> None:
        """
        Two servers on one database register at once; both show the same
        log, with the same key.
        """
        other = await start_server(self, db=self.server.service.config.db)
        other_log = LogClient(self, other.url)
        await gatherResults([
            ensureDeferred(register(self.http, url, f"twin{n}"))
            for n in range(16)
            for url in [(self.server.url, other.url)[n % 2]]
        ])
        one, two = await self.log.head(), await other_log.head()
        self.assertEqual((one["size"], one["root"], one["key"]),
                         (two["size"], two["root"], two["key"]))
        leaves = await self.log.leaves()
        self.assertEqual(bytes.fromhex(one["root"]), mth(leaves))
        self.assertEqual(await other_log.leaves(), leaves)

    async def test_log_key_kept_across_restarts(self) -> None:
        await register(self.http, self.server.url, "alice")
        head = await self.log.head()
        await self.server.service.stopService()
        again = await start_server(self, db=self.server.service.config.db)
        later = await LogClient(self, again.url).head()
        self.assertEqual((later["key"], later["root"]), (head["key"], head["root"]))


on_postgresql(globals(), KeyLogTests)


class QueryPlanTests(TestCase):
    def test_node_reads_are_index_lookups(self) -> None:
        """
        A proof reads its nodes by primary key, never by scanning the
        table (a row-value IN list is planned as a scan by SQLite: at a
        million leaves that made every proof take seconds).
        """
        conn = sqlite3.connect(":memory:")
        upgrade(conn)
        plan = " ".join(str(row) for row in conn.execute("EXPLAIN QUERY PLAN " + NODE_SQL, (0, 0)))
        self.assertIn("USING PRIMARY KEY", plan)
        self.assertNotIn("SCAN", plan)

    async def test_postgres_node_reads_are_index_lookups(self) -> None:
        import asyncpg

        from kezchat.storage.dburl import pool_settings
        from kezchat.storage.postgres.keylog import NODES_SQL
        from kezchat.storage.postgres.schema import upgrade as pg_upgrade
        from kezchat.testing.pgsupport import fresh_database

        url = await fresh_database(self)

        async def plan() -> str:
            conn = await asyncpg.connect(pool_settings(url)[0])
            try:
                await pg_upgrade(conn)
                await conn.execute(
                    "INSERT INTO log_nodes (level, idx, hash)"
                    " SELECT 0, i, sha256(int8send(i)) FROM generate_series(0, 50000) AS i"
                )
                await conn.execute("ANALYZE log_nodes")
                rows = await conn.fetch("EXPLAIN " + NODES_SQL, [0, 0], [5, 7])
                return " ".join(row[0] for row in rows)
            finally:
                await conn.close()

        text = await deferred_from_coroutine(plan())
        self.assertIn("Index Scan", text)
        self.assertNotIn("Seq Scan on log_nodes", text)


class LogGarbageTests(BadInputTestCase):
    async def test_log_queries(self) -> None:
        """
        Arbitrary query strings on every log route: a SPEC error or a
        proof, never a 500 or a hang.
        """
        routes = [b"/v1/log/inclusion", b"/v1/log/consistency", b"/v1/log/entries",
                  b"/v1/log/head"]
        names = st.sampled_from(["handle", "size", "from", "to", "start", "count", "x"])
        values = st.one_of(
            st.integers(-5, 10).map(str),
            st.sampled_from(["alice", "bob-1", "carol_c", "ALICE@kez.lat", "9" * 40, "1e3",
                             "0x1", " 1", "+1", "١"]),
            st.text(max_size=20),
            st.binary(max_size=12).map(lambda b: b.decode("latin-1")),
        )

        @barrage_settings
        @given(st.sampled_from(routes), st.lists(st.tuples(names, values), max_size=4))
        def prop(route: bytes, params: list[tuple[str, str]]) -> None:
            query = "&".join(f"{k}={quote(v.encode('utf-8', 'surrogatepass'), safe='')}"
                             for k, v in params)
            target = route + (b"?" + query.encode() if query else b"")
            reply = self.send(b"GET", target)
            if reply.status == 200:
                body = json.loads(reply.body)
                assert set(body) <= {"size", "root", "ts", "key", "sig", "index", "leaf",
                                     "path", "entries"}, (target, body)
                return
            assert_spec_error(reply, target)

        await self.barrage(prop)
