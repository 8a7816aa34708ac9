"""
L{kezchat.http.routedata}: one typed record per request, made on first
use, gone with its request.
"""

from __future__ import annotations

import gc
import weakref

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from kezchat.http.routedata import _TABLE, RouteData, route_data


class RouteDataTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        self.assertEqual(route_data(DummyRequest([b""])), RouteData("unmatched", None, False))

    def test_one_record_per_request(self) -> None:
        request, other = DummyRequest([b""]), DummyRequest([b""])
        route_data(request).route = "send"
        route_data(request).streaming = True
        self.assertEqual(route_data(request), RouteData("send", None, True))
        self.assertEqual(route_data(other).route, "unmatched")

    def test_goes_with_its_request(self) -> None:
        request = DummyRequest([b""])
        data = route_data(request)
        data.body_cap = 10
        kept = weakref.ref(data)
        self.assertIn(request, _TABLE)
        del request, data
        gc.collect()
        self.assertIsNone(kept())
