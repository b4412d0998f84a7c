"""The request fingerprint tells a retry (same content) from a replay (other content)."""

import pytest

from plivohook.store.base import request_fingerprint


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (("message", "", [("a\x01b", "")]), ("message", "", [("a", "b\x01")])),
        (("message", "", [("ab", "c")]), ("message", "", [("a", "bc")])),
        (("message", "x=1", []), ("message", "", [("x", "1")])),
        (("message", "", [("a", "1")]), ("status", "", [("a", "1")])),
        (("message", "", [("a", "1"), ("a", "1")]), ("message", "", [("a", "1")])),
    ],
)
def test_different_content_different_fingerprint(a, b):
    assert request_fingerprint(*a) != request_fingerprint(*b)


def test_order_of_fields_does_not_matter():
    pairs = [("From", "1415"), ("Text", "hé"), ("MessageUUID", "u")]
    assert request_fingerprint("message", "", pairs) == request_fingerprint(
        "message", "", list(reversed(pairs))
    )
