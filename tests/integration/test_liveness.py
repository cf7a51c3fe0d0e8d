"""The ping timeout and what counts as hearing from a client."""

from __future__ import annotations

import socket

from forkchat import protocol
from tests.support.ircclient import IrcTestClient

# Two lines at once, then two a second; pinged after a second of silence,
# dropped after one more.
SLOW_FLOOD_QUICK_PINGS = """
[limits]
flood_burst = 2
flood_rate = 2.0
ping_interval = 1
ping_timeout = 1
"""
LINES = 8               # run over 3 s: past the 2 s a silent client is given


def next_of(client: IrcTestClient, commands: tuple[str, ...], texts: list[str]) -> protocol.Message:
    """The next message with one of `commands`, every PING before it
    answered: the reader, which says nothing, is pinged every second, and a
    PING skipped unanswered (by `expect`, waiting for the poster's JOIN on a
    busy machine) dropped it a second later."""
    while True:
        msg = client.read_msg(10)
        assert msg is not None, texts
        if msg.command == "PING":
            client.send("PONG :" + msg.params[-1])
        elif msg.command in commands:
            return msg


def test_lines_held_by_flood_control_outlive_the_ping_timeout(make_server):
    """A script that sends a batch of lines and closes its end (nc -N):
    flood control runs them over three seconds, and the client, which can
    send nothing more, leaves once all have run.  Before, the ping timeout
    closed it after two seconds, with most of its lines unsent."""
    server = make_server(config_text=SLOW_FLOOD_QUICK_PINGS)
    reader = IrcTestClient(server.port)
    reader.register("reader")
    reader.send("JOIN #r")              # held half a second by flood control
    next_of(reader, ("366",), [])
    poster = IrcTestClient(server.port)
    poster.register("poster")
    poster.join("#r")
    next_of(reader, ("JOIN",), [])
    poster.send("".join(f"PRIVMSG #r :line {index}\r\n" for index in range(LINES)).encode())
    poster.sock.shutdown(socket.SHUT_WR)
    texts = []
    while True:
        msg = next_of(reader, ("PRIVMSG", "QUIT"), texts)
        texts.append(msg.params[-1])
        if msg.command == "QUIT":
            break
    assert texts == [f"line {index}" for index in range(LINES)] + ["Connection closed"]
    reader.close()
    poster.close()
