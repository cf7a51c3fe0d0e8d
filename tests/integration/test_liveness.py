"""The ping timeout and what counts as hearing from a client."""

from __future__ import annotations

import socket

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
LINES = 12


def test_lines_held_by_flood_control_outlive_the_ping_timeout(make_server):
    """A script that sends a batch of lines and closes its end (nc -N):
    flood control runs them over five seconds, and the client, which can
    send nothing more, leaves once all have run.  Before, the ping timeout
    closed it after two seconds, with most of its lines unsent."""
    server = make_server(config_text=SLOW_FLOOD_QUICK_PINGS)
    reader = IrcTestClient(server.port)
    reader.register("reader")
    reader.join("#r")
    poster = IrcTestClient(server.port)
    poster.register("poster")
    poster.join("#r")
    reader.expect("JOIN")
    poster.send("".join(f"PRIVMSG #r :line {index}\r\n" for index in range(LINES)).encode())
    poster.sock.shutdown(socket.SHUT_WR)
    texts = []
    while True:
        msg = reader.read_msg(10)
        assert msg is not None, texts
        if msg.command == "PING":
            reader.send("PONG :" + msg.params[-1])
        elif msg.command in ("PRIVMSG", "QUIT"):
            texts.append(msg.params[-1])
            if msg.command == "QUIT":
                break
    assert texts == [f"line {index}" for index in range(LINES)] + ["Connection closed"]
    reader.close()
    poster.close()
