"""
Tests for L{kezchat.manifests}: signed blobs verify, any damage is caught
with a precise reason, and each reader sees exactly what is theirs.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from kezchat.identity.jcs import canonical_json
from kezchat.identity.keys import KeyPair
from kezchat.manifests import (
    MAX_MANIFEST_BYTES,
    ManifestError,
    UnsealError,
    build_manifest,
    check_entry,
    check_manifest_shape,
    manifest_blake3,
    manifest_bytes,
    new_content_key,
    open_content_key,
    private_entry,
    public_entry,
    read_manifest,
    seal_content_key,
    shared_files_body,
    verify_manifest,
)
from kezchat.manifests.errors import CODES
from kezchat.sigchain.fields import FieldError
from tests.strategies import Published, byte_flips, keypairs, manifests

OWNER = KeyPair(bytes(range(32)))
CHRIS = KeyPair(bytes(range(1, 33)))
DANA = KeyPair(bytes(range(2, 34)))
T = "2026-05-25T03:00:00Z"
FILE = {
    "name": "photo.jpg",
    "size": 1234,
    "mime": "image/jpeg",
    "blake3": "cd" * 32,
    "added_at": T,
}


def sample() -> tuple[bytes, bytes]:
    key = new_content_key()
    manifest = build_manifest(
        OWNER,
        [
            public_entry(id="pub", **FILE),
            private_entry(id="priv", **FILE, content_key=key, recipients=[CHRIS.primary]),
        ],
        created_at=T,
    )
    return manifest_bytes(manifest), key


class ReaderTests(SynchronousTestCase):
    @settings(max_examples=100, deadline=None)
    @given(manifests(), keypairs)
    def test_readers_see_their_entries(self, published: Published, stranger: KeyPair) -> None:
        """
        Every reader sees every public entry and exactly the private ones
        wrapped for them, with the right content keys; a stranger sees only
        the public ones.
        """
        digest = manifest_blake3(published.blob)
        entries = published.manifest["entries"]
        public_ids = {e["id"] for e in entries if e["visibility"] == "public"}
        for reader in [*published.readers, stranger]:
            view = read_manifest(
                published.blob,
                reader,
                owner=published.owner.primary,
                expected_blake3=digest,
            )
            self.assertEqual({v.entry["id"] for v in view.public}, public_ids)
            mine = {
                e["id"]
                for e in entries
                if e["visibility"] == "private" and reader.public_hex in e["wrapped"]
            }
            self.assertEqual({v.entry["id"] for v in view.private}, mine)
            for visible in view.public + view.private:
                self.assertEqual(
                    visible.content_key, published.content_keys.get(visible.entry["id"])
                )
            self.assertEqual(view.unreadable, ())

    @settings(max_examples=300, deadline=None)
    @given(st.data())
    def test_byte_flip(self, data: st.DataObject) -> None:
        """
        Any single changed byte is refused, with or without the digest.
        """
        published = data.draw(manifests(max_entries=3))
        _, damaged = data.draw(byte_flips(published.blob))
        with self.assertRaises(ManifestError) as caught:
            verify_manifest(damaged, owner=published.owner.primary)
        self.assertIn(caught.exception.code, CODES)
        self.assertNotEqual(caught.exception.code, "blake3_mismatch")
        with self.assertRaises(ManifestError) as caught:
            verify_manifest(damaged, expected_blake3=manifest_blake3(published.blob))
        self.assertEqual(caught.exception.code, "blake3_mismatch")

    def test_sample(self) -> None:
        blob, key = sample()
        view = read_manifest(blob, CHRIS, owner=OWNER.primary)
        self.assertEqual([v.entry["id"] for v in view.public], ["pub"])
        self.assertEqual([(v.entry["id"], v.content_key) for v in view.private], [("priv", key)])
        self.assertEqual(read_manifest(blob, DANA).private, ())

    def test_broken_wrap_is_reported(self) -> None:
        """
        A key sealed for the reader that will not open is surfaced, not hidden.
        """
        entry = private_entry(
            id="x", **FILE, content_key=new_content_key(), recipients=[DANA.primary]
        )
        entry["wrapped"] = {CHRIS.public_hex: entry["wrapped"][DANA.public_hex]}
        blob = manifest_bytes(build_manifest(OWNER, [entry], created_at=T))
        view = read_manifest(blob, CHRIS)
        self.assertEqual(([v.entry["id"] for v in view.private], len(view.unreadable)), ([], 1))


class ReasonTests(SynchronousTestCase):
    def assert_code(self, data: bytes, code: str, **kwargs: object) -> None:
        with self.assertRaises(ManifestError) as caught:
            verify_manifest(data, **kwargs)
        self.assertEqual(caught.exception.code, code, str(caught.exception))

    def resigned(self, mutate) -> bytes:
        blob, _ = sample()
        manifest = verify_manifest(blob)
        mutate(manifest)
        manifest.pop("sig", None)
        manifest["sig"] = OWNER.sign_jcs(manifest)
        return canonical_json(manifest)

    def test_wrong_owner(self) -> None:
        self.assert_code(sample()[0], "wrong_owner", owner=CHRIS.primary)

    def test_bad_signature(self) -> None:
        blob, _ = sample()
        self.assert_code(blob.replace(b"photo.jpg", b"photo.exe"), "bad_signature")

    def test_too_large(self) -> None:
        self.assert_code(b" " * (MAX_MANIFEST_BYTES + 1), "too_large")
        many = [public_entry(id=f"f{i}", **FILE) for i in range(400)]
        with self.assertRaises(ManifestError) as caught:
            manifest_bytes(build_manifest(OWNER, many, created_at=T))
        self.assertEqual(caught.exception.code, "too_large")

    def test_blake3_checked_first(self) -> None:
        self.assert_code(b"garbage", "blake3_mismatch", expected_blake3="00" * 32)

    def test_malformed(self) -> None:
        def entry(index: int, **changes: object):
            def mutate(manifest: dict) -> None:
                manifest["entries"][index].update(changes)

            return mutate

        def drop(key: str):
            return lambda manifest: manifest.pop(key)

        mutations = [
            drop("created_at"),
            lambda m: m.update(type="kez.chat.other"),
            lambda m: m.update(version=2),
            lambda m: m.update(version=True),
            lambda m: m.update(entries={}),
            lambda m: m.update(extra=1),
            lambda m: m["entries"].append(m["entries"][0]),
            entry(0, name="../../etc/passwd"),
            entry(0, name=".."),
            entry(0, name="a\x00b"),
            entry(0, size=-1),
            entry(0, size=1.5),
            entry(0, blake3="CD" * 32),
            entry(0, visibility="friends"),
            entry(0, wrapped={CHRIS.public_hex: "AAAA"}),
            entry(0, key="AAAA"),
            entry(1, wrapped={}),
            entry(1, key="A" * 43),
            entry(1, wrapped={"zz": "A"}),
        ]
        for mutate in mutations:
            with self.subTest(mutate=mutate):
                self.assert_code(self.resigned(mutate), "malformed")
        for garbage in [b"", b"\xff\xfe", b"[]", b'{"type": NaN}', b"{" * 5000]:
            with self.subTest(garbage=garbage[:10]):
                self.assert_code(garbage, "malformed")

    def test_float_version(self) -> None:
        """
        C{1.0} is not C{1} to the shape check (though JCS would print it as
        C{1}, so it cannot arrive as bytes).
        """
        manifest = verify_manifest(sample()[0])
        self.assertRaises(ManifestError, check_manifest_shape, {**manifest, "version": 1.0})

    def test_entry_constructors_check(self) -> None:
        with self.assertRaises(FieldError):
            public_entry(id="x", **{**FILE, "name": "a/b"})
        with self.assertRaises(FieldError):
            public_entry(id="x", **{**FILE, "size": 2**53})


class SealingTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        key = new_content_key()
        sealed = seal_content_key(key, CHRIS.primary)
        self.assertEqual(open_content_key(sealed, CHRIS), key)
        self.assertRaises(UnsealError, open_content_key, sealed, DANA)
        self.assertRaises(UnsealError, open_content_key, sealed + "=", CHRIS)
        self.assertRaises(UnsealError, open_content_key, "!!", CHRIS)

    def test_check_entry_sealed_length(self) -> None:
        entry = private_entry(id="x", **FILE, content_key=bytes(32), recipients=[CHRIS.primary])
        self.assertEqual(check_entry(entry), entry)

    def test_shared_files_body(self) -> None:
        blob, _ = sample()
        body = shared_files_body(blob, "https://kez.lat/v1/manifests/owner")
        self.assertEqual(
            body,
            {
                "manifest_blake3": manifest_blake3(blob),
                "size": len(blob),
                "url": "https://kez.lat/v1/manifests/owner",
            },
        )
