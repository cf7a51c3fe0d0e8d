"""PING and PONG in the worker's table, on a recording context: no sockets."""

from __future__ import annotations

import pytest

from forkchat import commands, config, numerics, protocol
from forkchat.session import Session


class Recorder:
    """A commands.Context that keeps what the handler writes."""

    def __init__(self, registered: bool = True) -> None:
        self.cfg = config.Config()
        self.session = Session(cid=1, host="192.0.2.1", user="alice",
                               nick="alice" if registered else "", registered=registered)
        self.lines: list[protocol.Message] = []

    def write(self, line: bytes) -> None:
        self.lines.append(protocol.parse_line(line.rstrip(b"\r\n")))


def run(line: str, registered: bool = True) -> list[protocol.Message]:
    ctx = Recorder(registered)
    commands.dispatch(ctx, protocol.parse_line(line.encode()), line.encode())
    return ctx.lines


@pytest.mark.parametrize("line", ["PONG", "PONG :", "PING", "PING :"])
@pytest.mark.parametrize("registered", [True, False])
def test_a_ping_or_pong_without_its_token_is_answered_409(line, registered):
    """RFC 2812 3.7.2 and 3.7.3 both list ERR_NOORIGIN: "PING or PONG message
    missing the originator parameter"."""
    replies = run(line, registered)
    assert [(m.command, m.params[0]) for m in replies] == \
        [(numerics.ERR_NOORIGIN, "alice" if registered else "*")]


@pytest.mark.parametrize("line", ["PONG fork.test", "PONG :token", "PONG a b"])
def test_a_pong_with_a_token_is_not_answered(line):
    assert run(line) == []


def test_a_ping_is_answered_with_its_token():
    (pong,) = run("PING :abc def")
    assert pong.command == "PONG" and pong.params[-1] == "abc def"
