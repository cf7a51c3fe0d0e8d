"""transport: a host name that cannot be looked up is a sentence, not a traceback."""

from __future__ import annotations

import selectors

import pytest

from forkchat.client import transport


@pytest.mark.parametrize("host", ["chat..example.org", "x" * 70 + ".example.org", ".example"])
def test_a_name_that_cannot_be_encoded_is_refused_in_words(host):
    """Python's IDNA codec refuses an empty label or one over 63 letters with a
    UnicodeError, which getaddrinfo passed up as a traceback."""
    lost: list[str] = []
    link = transport.Link(selectors.DefaultSelector(), host, 6667, None,
                          lambda: None, lambda line: None, lost.append)
    link.open()
    assert lost == [f"cannot resolve {host}: not a host name (an empty part, or a part over "
                    "63 letters)"], lost
    assert not link.is_open
