"""Helpers the chat-command integration tests share (rooms, talk, query, nick, oper).

`drain` is how these tests count replies exactly, as irctest's getMessages
does, without sleeping: a command that goes through the broker, then a PING.
The worker answers that PING only after the broker has answered everything
before it, and the broker's link to a worker is one ordered stream, so
every line the broker sent this client earlier (replies and relays from
other clients alike) has been read by the time the PONG arrives.
"""

from __future__ import annotations

from forkchat import protocol
from tests.support.ircclient import IrcTestClient

OPER_CONFIG = '[[operators]]\nname = "admin"\npassword = "pw"\n'
_ROUND_TRIP = "221"     # RPL_UMODEIS: the answer to the MODE <own nick> query drain sends


def drain(client: IrcTestClient, token: str = "drain") -> list[protocol.Message]:
    """Every message the server sent `client` so far and not yet read."""
    client.send(f"MODE {client.nick}")
    client.send(f"PING :{token}")
    got: list[protocol.Message] = []
    client.expect(lambda m: got.append(m) or (m.command == "PONG" and m.params[-1] == token))
    got.pop()
    for index in range(len(got) - 1, -1, -1):
        if got[index].command == _ROUND_TRIP:
            del got[index]          # the last 221 answers drain's own MODE query
            break
    return got


def ask(client: IrcTestClient, line: str) -> list[protocol.Message]:
    """Send one line and return exactly what the server answered to it."""
    client.send(line)
    return drain(client)


def commands(messages: list[protocol.Message]) -> list[str]:
    return [msg.command for msg in messages]


def nick_of(msg: protocol.Message) -> str:
    return msg.prefix.split("!", 1)[0]


def joined(*clients: IrcTestClient, room: str) -> None:
    """Join every client to `room` in order, then let everyone read the JOINs."""
    for client in clients:
        client.join(room)
    for client in clients:
        drain(client)

