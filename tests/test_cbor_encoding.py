"""
The fast path of L{encodeBody} gives exactly cbor2's canonical encoding:
signatures and the deterministic-encoding check of every received message
depend on it byte for byte.
"""

from __future__ import annotations

from typing import Any

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from appnpy.cp.messages import ProtocolError, decodeBody, encodeBody

scalars = (
    st.text(max_size=40)
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.binary(max_size=40)
    | st.booleans()
    | st.none()
    | st.floats(allow_nan=False)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=12) | st.integers(), inner, max_size=4)
    ),
    max_leaves=12,
)
bodies = st.dictionaries(st.text(max_size=16), values, max_size=10)


class EncodeBodyTests(SynchronousTestCase):
    @settings(max_examples=500)
    @given(bodies)
    def test_sameAsCanonical(self, body: dict[str, Any]) -> None:
        """
        Any map, flat or not, in any key order: the same bytes as
        C{cbor2.dumps(body, canonical=True)}.
        """
        self.assertEqual(encodeBody(body), cbor2.dumps(body, canonical=True))
        reordered = dict(reversed(list(body.items())))
        self.assertEqual(encodeBody(reordered), cbor2.dumps(body, canonical=True))

    def test_nonTextKeys(self) -> None:
        body: Any = {1: "a", "b": 2}
        self.assertEqual(encodeBody(body), cbor2.dumps(body, canonical=True))

    @settings(max_examples=300)
    @given(bodies)
    def test_nonCanonicalOrderRefused(self, body: dict[str, Any]) -> None:
        """
        A message whose keys are not in canonical order is still refused
        (the check re-encodes through the fast path).
        """
        body = {"type": "SessionAccept", "session_id": "ab" * 16, **body}
        plain = cbor2.dumps(body)
        if plain == cbor2.dumps(body, canonical=True):
            return
        with self.assertRaises(ProtocolError):
            decodeBody(plain)
