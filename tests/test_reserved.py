"""
Reserved handles are refused in their obvious variants too: a reserved
word with separators or digits around or inside it (C{admin-}, C{admin_},
C{ad-min}, C{admin2}), as a piece of a longer handle (C{kez-official},
C{the_admin}), and anything beginning with the service's name (C{kezteam}).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase, TestCase

from kezchat.identity.handles import LOCAL_RE, RESERVED_HANDLES, is_reserved
from kezchat.identity.keys import KeyPair
from tests.support import http_client, json_of, registration, start_server

_decoration = st.text(alphabet="-_0123456789", max_size=3)


class RuleTests(SynchronousTestCase):
    @given(st.sampled_from(sorted(RESERVED_HANDLES)), _decoration, _decoration)
    def test_decorated_reserved_words(self, word: str, before: str, after: str) -> None:
        self.assertTrue(is_reserved(before + word + after))

    @given(st.sampled_from(sorted(RESERVED_HANDLES)), st.sampled_from(["bob", "team", "x1"]))
    def test_reserved_word_as_a_piece(self, word: str, other: str) -> None:
        self.assertTrue(is_reserved(f"{other}-{word}"))
        self.assertTrue(is_reserved(f"{word}_{other}"))

    def test_ordinary_names_pass(self) -> None:
        for name in ("alice", "carol2", "secure", "testuser", "rootbeer", "administer-it",
                     "bob-the-builder", "supportive"):
            self.assertTrue(LOCAL_RE.fullmatch(name))
            self.assertFalse(is_reserved(name), name)


class RegistrationTests(TestCase):
    timeout = 30

    async def test_variants_refused_over_http(self) -> None:
        server = await start_server(self)
        client = http_client(self)
        for name in ("admin-", "admin_", "kez-official", "ad-min", "admin2", "the_admin",
                     "kezteam", "support-1"):
            response = await client.post(
                f"{server.url}/v1/register", json=registration(KeyPair.generate(), name)
            )
            body = await json_of(response)
            self.assertEqual((response.code, body["error"]["code"]), (400, "reserved_handle"), name)
        response = await client.post(
            f"{server.url}/v1/register", json=registration(KeyPair.generate(), "admirable")
        )
        self.assertEqual(response.code, 201)
        await response.content()
