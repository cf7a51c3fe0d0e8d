"""The wire protocol's edge cases on the broker's state: parameters a
client sends empty, and what it expects back (modern client protocol
document, RFC 2812).  No sockets: the World of test_state.py."""

from __future__ import annotations

import pytest

from tests.unit.test_state import World


@pytest.fixture
def room() -> World:
    """alice (op) and bob in #room."""
    world = World()
    world.add("alice")
    world.add("bob")
    world.cmd("alice", "JOIN #room")
    world.cmd("bob", "JOIN #room")
    return world


@pytest.mark.parametrize("line, expected", [
    ("MODE #room :", [":srv 324 bob #room +nt", ":srv 329 bob #room 1000"]),
    ("MODE bob :", [":srv 221 bob +"]),
])
def test_an_empty_modestring_is_a_query(room, line, expected):
    """Modern, MODE: "If <modestring> is not given, the RPL_CHANNELMODEIS
    (324) numeric is returned" (RPL_UMODEIS for a user); an empty trailing
    names nothing (protocol.has_params), and it drew no reply at all."""
    assert room.to("bob", line) == expected
