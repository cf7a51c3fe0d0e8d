"""Helpers the chat-command integration tests share (rooms, talk, query, nick, oper).

`drain` is how these tests count replies exactly, as irctest's getMessages
does, without sleeping: a command that goes through the broker, then a PING.
The worker answers that PING only after the broker has answered everything
before it, and the broker's link to a worker is one ordered stream, so
every line the broker sent this client earlier (replies and relays from
other clients alike) has been read by the time the PONG arrives.

A module that imports `shared_server`, `server` and `clients` from here runs
all its tests against one server (starting one per test was most of these
files' run time); each test's clients QUIT and are seen closed at teardown,
so the next test finds every nick free and every room gone.  Tests that
count server-wide things (LUSERS, WHOWAS history) keep a server of their own.
"""

from __future__ import annotations

import pytest

from forkchat import protocol
from tests.conftest import TEST_LIMITS
from tests.support.ircclient import IrcTestClient, client_factory
from tests.support.server import ServerProcess, left_behind

OPER_CONFIG = '[[operators]]\nname = "admin"\npassword = "pw"\n'
_ROUND_TRIP = "221"     # RPL_UMODEIS: the answer to the MODE <own nick> query drain sends


# A send queue small enough that a client which stops reading is dropped
# quickly, and flood limits out of the way of a sender that fills it.
SMALL_SENDQ = """
[limits]
sendq_bytes = 32768
flood_burst = 100000
flood_rate = 100000.0
recvq_bytes = 65536
"""


def flood_until_dropped(sender: IrcTestClient, server: ServerProcess, stuck_nick: str,
                        room: str = "#room") -> None:
    """Send 400-byte lines to `room` until the server drops `stuck_nick`
    for its send queue (bounded: 1500 lines, a sync every 300)."""
    for index in range(1500):
        sender.send(f"PRIVMSG {room} :{index} " + "z" * 400)
        if index % 300 == 299:
            sender.sync(f"s{index}")
    server.wait_for_text(f"{stuck_nick} closing: Max SendQ exceeded")


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



# A shared server takes a whole module's connections from one address:
# test_rooms.py opens some 145 in 2-4 s since workers set TCP_NODELAY (13 s
# before), past the default connect_burst (100) and connect_rate (20/s), and
# its last tests were refused "Connecting too fast".
SHARED_LIMITS = TEST_LIMITS + "connect_burst = 1000\nconnect_rate = 1000.0\n"


@pytest.fixture(scope="module")
def shared_server(request):
    """One started server for a whole test module (configured by its SERVER_CONFIG)."""
    server = ServerProcess(config_text=getattr(request.module, "SERVER_CONFIG",
                                               SHARED_LIMITS)).start()
    yield server
    leftover = server.descendants()
    server.stop()
    stray = left_behind(leftover)
    assert not stray, f"processes left behind: {stray}"


@pytest.fixture
def server(shared_server):
    """Overrides conftest's `server`: the module's shared one."""
    return shared_server


@pytest.fixture
def clients(server):
    """Overrides conftest's `clients`: the same factory, with clients that leave politely."""
    with client_factory(server.port, leave) as connect:
        yield connect


def leave(client: IrcTestClient) -> None:
    """QUIT and wait for the close: the broker has then dropped the nick and rooms."""
    try:
        client.send("QUIT")
        client.expect_closed()
    except (AssertionError, OSError):
        pass
    client.close()
