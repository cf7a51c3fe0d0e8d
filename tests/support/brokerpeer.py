"""A registered client's link to an in-process broker with no loop
running: frames go straight to its dispatch, and what the broker writes
to the worker's end waits on a socket pair for the test to read."""

from __future__ import annotations

import json
import socket

from forkchat import broker, ipc


class BrokerPeer:
    def __init__(self, made: broker.Broker, cid: int, nick: str, room: str = "#room") -> None:
        self.made = made
        self.nick = nick
        mine, self.theirs = socket.socketpair()
        mine.setblocking(False)
        self.theirs.setblocking(False)
        self.link = broker.Link(mine, 1 << 20)
        self.frame(ipc.Kind.HELLO, json.dumps({"cid": cid, "host": "h", "proto": "irc"}).encode())
        self.send(f"NICK {nick}")
        self.frame(ipc.Kind.REGISTER, json.dumps({"user": "u", "realname": "R"}).encode())
        if room:
            self.send(f"JOIN {room}")

    def frame(self, kind: int, payload: bytes = b"") -> None:
        self.made._dispatch(self.link, kind, payload)

    def send(self, line: str) -> None:
        self.frame(ipc.Kind.REQUEST, line.encode())
